"""Reading images and datasets: files, folders, MedMNIST archives and the built-in demo set."""

from olsdesk.core.data.images import IMAGE_SUFFIXES, ImageReadError, read_image

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_image"]
