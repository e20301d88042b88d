"""Test data makers: DICOM files, corrupt files, image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_dicom(path: Path, pixels: np.ndarray | None, *, photometric: str = "MONOCHROME2",
                slope: float = 1.0, intercept: float = 0.0, window: tuple | None = None,
                signed: bool = False, transfer_syntax: str | None = None) -> Path:
    """A minimal single-frame DICOM; ``pixels`` None leaves out the pixel data."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Phantom"
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels is not None:
        pixels = np.asarray(pixels)
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = ds.BitsAllocated
        ds.HighBit = ds.BitsAllocated - 1
        ds.PixelRepresentation = 1 if signed else 0
        if transfer_syntax is None:
            ds.PixelData = pixels.tobytes()
        else:  # an encapsulated frame of garbage: undecodable, whatever is installed
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
            ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_class_folder(root: Path, classes: dict[str, int], size: int = 24, seed: int = 0) -> Path:
    """PNG images in class folders; each class a different mean brightness."""
    rng = np.random.default_rng(seed)
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            level = 30 + 40 * c
            img = np.clip(rng.normal(level, 10, (size, size)), 0, 255).astype(np.uint8)
            write_png(root / name / f"img{i:03d}.png", img)
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_zip_bomb(path: Path) -> Path:
    """A torch-looking zip whose one deflated member unpacks to 1 GB of zeros from about
    a megabyte."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w", force_zip64=True) as member:
            block = bytes(64 * 1024**2)
            for _ in range(16):
                member.write(block)
    assert path.stat().st_size < 5 * 1024**2
    return path
