"""``read_image(path)``: PNG, JPEG, TIFF, BMP and DICOM to a float array in [0, 1].

The result is ``H x W`` for grayscale or ``H x W x 3`` for colour, float32. Anything
that cannot be read raises ``ImageReadError`` whose message is one sentence naming the
file and the reason, so callers can show it as it is.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from olsdesk.errors import ImageReadError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})

# The pip packages that let pydicom decode each compressed family (first match wins).
_DICOM_DECODERS = (
    ("JPEG 2000", "pylibjpeg pylibjpeg-openjpeg"),
    ("JPEG", "pylibjpeg pylibjpeg-libjpeg"),  # baseline, extended, lossless and JPEG-LS
    ("RLE", "pylibjpeg pylibjpeg-rle"),
)


def is_dicom(path: Path) -> bool:
    """True for a DICOM suffix, or a file carrying the 'DICM' preamble magic."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """The image at ``path`` as float32 in [0, 1].

    With ``min_side`` set, a large image is reduced at read time by the largest whole
    factor that keeps its shorter side at least ``min_side`` pixels (JPEG's DCT scaling,
    then PIL's box reduction, or block averaging for DICOM), so a huge file never sits
    in memory at full resolution as floats. Callers do not choose ``min_side``: it is
    part of ``Preprocessing``, the one path from file to tensor.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise ImageReadError(f"{name} does not exist.")
    if path.is_dir():
        raise ImageReadError(f"{name} is a folder, not an image.")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{name} cannot be read ({exc.strerror}).") from exc
    if size == 0:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    if is_dicom(path):
        image = _read_dicom(path)
    else:
        image = _read_pil(path, min_side)
    if min_side is not None:
        image = _shrink(image, min_side)
    if not np.all(np.isfinite(image)):
        image = np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(image, dtype=np.float32)


def _read_pil(path: Path, min_side: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    name = path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min_side is not None and img.format == "JPEG":
                    img.draft(img.mode, (min_side, min_side))  # keeps both sides >= min_side
                if min_side is not None and (factor := _reduction(img.size, min_side)) > 1:
                    img = img.reduce(factor)
                img.load()
                return _pil_to_array(img)
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{name} is not an image olsdesk can read.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name} is too large to open safely ({exc}).") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name} is truncated or corrupt ({exc}).") from exc


def _pil_to_array(img) -> np.ndarray:
    mode = img.mode
    if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode == "1":
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        if mode in ("L", "LA"):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return _collapse_gray(rgb)
    # 16-bit, 32-bit integer and float images: stretch to the image's own range.
    return _min_max(np.asarray(img, dtype=np.float64))


def _collapse_gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB image whose three channels are equal is grayscale: keep one channel."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return rgb


def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = path.name
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise ImageReadError(f"{name} is not a readable DICOM file ({exc}).") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(f"{name} is a DICOM file without pixel data (no image to show).")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing decoders
        raise ImageReadError(_dicom_decode_message(ds, name, exc)) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    pixels = np.asarray(pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    is_colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    if frames > 1:  # a multi-frame series: show the middle frame
        pixels = pixels[pixels.shape[0] // 2]
    if is_colour:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        if pixels.ndim == 3 and pixels.shape[-1] >= 3:
            return _collapse_gray(_min_max(pixels[..., :3].astype(np.float64)))
        return _min_max(pixels.astype(np.float64))
    return _dicom_gray_to_display(ds, pixels.astype(np.float64), photometric)


def _dicom_gray_to_display(ds, pixels: np.ndarray, photometric: str) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = pixels * slope + intercept
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 1:
        # DICOM PS3.3 C.11.2.1.2 linear VOI function.
        lo = center - 0.5 - (width - 1) / 2
        hi = center - 0.5 + (width - 1) / 2
        out = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    else:
        out = _min_max(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, list | tuple) or hasattr(value, "__iter__") and not isinstance(
            value, str
        ):
            value = list(value)[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _dicom_decode_message(ds, name: str, exc: Exception) -> str:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax_name = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown"
    if syntax is not None and getattr(syntax, "is_compressed", False):
        if _decoder_available(syntax):
            return f"{name} is compressed as {syntax_name} and its pixel data could not be decoded."
        for family, packages in _DICOM_DECODERS:
            if family.lower() in syntax_name.lower():
                return (
                    f"{name} is compressed as {syntax_name} and no decoder for it is installed "
                    f"(pip install {packages}, or python-gdcm)."
                )
        return f"{name} is compressed as {syntax_name}, which no installed decoder reads ({exc})."
    return f"{name} has pixel data that cannot be decoded ({exc})."


def _decoder_available(syntax) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(syntax).is_available)
    except Exception:  # noqa: BLE001 - an unknown syntax has no decoder
        return False


def _reduction(shape, min_side: int) -> int:
    """The largest whole factor that keeps the shorter side at least ``min_side``."""
    return max(1, min(shape[:2]) // min_side)


def _shrink(image: np.ndarray, min_side: int) -> np.ndarray:
    """Block-average an image by ``_reduction`` (a no-op when it is 1)."""
    factor = _reduction(image.shape, min_side)
    if factor < 2:
        return image
    h = image.shape[0] // factor * factor
    w = image.shape[1] // factor * factor
    cropped = image[:h, :w]
    shape = (h // factor, factor, w // factor, factor) + cropped.shape[2:]
    return cropped.reshape(shape).mean(axis=(1, 3))
