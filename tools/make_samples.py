"""Write resources/samples: demo-set images (one per class, from a seed the
training split never uses) and a 16-bit CT-style DICOM, uncompressed and as JPEG
Lossless (the commonest compressed PACS syntax; the self-test predicts it, so the
bundle is checked to carry its decoder), for a first drop on the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from olsdesk.core.data.demo import CLASS_NAMES, render

OUT = Path(__file__).resolve().parent.parent / "resources" / "samples"


def write_ct_dicom(path: Path, gray: np.ndarray) -> None:
    """A 16-bit MONOCHROME2 DICOM in Hounsfield-like units with a lung window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    hu = gray.astype(np.float64) / 255.0 * 1400.0 - 1000.0  # air -1000 .. bone +400
    stored = np.round(hu + 1024.0).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Demo^Phantom", "OLSDESK-DEMO", "CT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = -300, 1400
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_jpeg_lossless(source: Path, path: Path) -> None:
    """``source`` re-encoded as JPEG Lossless, Process 14 SV1, with GDCM."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {source}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError("GDCM could not encode JPEG Lossless")
    writer = gdcm.ImageWriter()
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    writer.SetFileName(str(path))
    if not writer.Write():
        raise RuntimeError(f"GDCM could not write {path}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng_seed = 9_999  # the demo set is built from seed 0: these images are new to a model
    for label, name in enumerate(CLASS_NAMES):
        image = render(label, 64, np.random.default_rng([rng_seed, label, 0]))
        Image.fromarray(image).save(OUT / f"{name.replace('/', '_')}.png")
    nodule = render(1, 64, np.random.default_rng([rng_seed, 1, 1]))
    write_ct_dicom(OUT / "CT_lung_nodule.dcm", nodule)
    write_jpeg_lossless(OUT / "CT_lung_nodule.dcm", OUT / "CT_lung_nodule_jpeg_lossless.dcm")
    print(f"wrote {len(list(OUT.iterdir()))} samples to {OUT}")


if __name__ == "__main__":
    main()
