"""Real scanner files nobody here made (pydicom-data and pydicom's bundled files), and the
odd things real folders hold: every file is a tensor or one sentence, never a crash or
a hang, and the same picture stored two ways gives the same image."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from olsdesk.core.data.images import read_image, source_frame
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.errors import ImageReadError

pydicom = pytest.importorskip("pydicom")
BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"
try:
    import data_store  # the pydicom-data package

    CORPUS = Path(data_store.__file__).parent / "data"
except ImportError:  # pragma: no cover - a test extra
    CORPUS = None


def real(name: str) -> Path:
    for folder in (CORPUS, BUNDLED):
        if folder is not None and (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is not installed here")


def corpus_files() -> list[Path]:
    files = sorted(CORPUS.glob("*.dcm")) if CORPUS is not None else []
    return files + sorted(BUNDLED.rglob("*.dcm"))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_every_real_dicom_is_a_tensor_or_one_sentence(path):
    preprocessing = Preprocessing.for_size(32, 1)
    try:
        tensor = preprocessing.load(path)
    except ImageReadError as exc:
        message = str(exc)
        assert message.endswith(".") and "\n" not in message and path.name in message
        assert "force=True" not in message and "pip install" not in message
    else:
        assert tensor.shape == (1, 32, 32) and bool(tensor.isfinite().all())


@pytest.mark.parametrize("other", ["SC_ybr_full_uncompressed.dcm", "SC_rgb_rle.dcm",
                                   "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm",
                                   "SC_rgb_expb.dcm", "SC_rgb_dcmtk_+eb+cr.dcm"])
def test_the_same_colour_picture_stored_two_ways_reads_the_same(other):
    """YBR is converted to RGB once (twice swapped red and green); 8-bit YCbCr rounding
    and lossy JPEG leave a few grey levels."""
    reference, image = read_image(real("SC_rgb.dcm")), read_image(real(other))
    assert image.shape == reference.shape == (100, 100, 3)
    assert np.abs(image - reference).max() <= 6 / 255


@pytest.mark.parametrize("compressed,plain", [("US1_J2KR.dcm", "US1_UNCR.dcm"),
                                              ("US1_J2KI.dcm", "US1_UNCI.dcm"),
                                              ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),
                                              ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
                                              ("JPGLosslessP14SV1_1s_1f_8b.dcm", None),
                                              ("emri_small_jpeg_ls_lossless.dcm",
                                               "emri_small.dcm")])
def test_compressed_dicom_decodes_as_its_uncompressed_twin(compressed, plain):
    image = read_image(real(compressed))
    assert np.isfinite(image).all() and image.max() > image.min()
    if plain is not None:
        twin = read_image(real(plain))
        assert image.shape == twin.shape
        tolerance = 6 / 255 if "J2KI" in compressed else 1e-6  # the J2KI pair is lossy
        assert np.abs(image - twin).max() <= tolerance


def test_palette_colour_is_applied():
    image = read_image(real("OT-PAL-8-face.dcm"))
    assert image.ndim == 3 and image.shape[-1] == 3


def test_multi_frame_decodes_the_middle_frame_and_says_so():
    path = real("SC_rgb_2frame.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array[1].astype(np.float64)  # the frame of two that olsdesk shows
    image = read_image(path)
    lo, hi = expected.min(), expected.max()
    np.testing.assert_allclose(image, (expected - lo) / (hi - lo), atol=1e-6)
    assert source_frame(path) == (2, 2)  # frame 2 of 2
    assert source_frame(real("SC_rgb.dcm")) is None


def test_truncated_and_headerless_dicom_get_true_sentences(tmp_path):
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(real("emri_small_jpeg_2k_lossless_too_short.dcm"))
    # a DICOM data set written without the 128-byte preamble and file meta: read with force
    ds = pydicom.dcmread(real("CT_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    headerless = tmp_path / "headerless.dcm"
    ds.save_as(headerless, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert headerless.read_bytes()[128:132] != b"DICM"  # no preamble, no 'DICM', no meta
    np.testing.assert_allclose(read_image(headerless), read_image(real("CT_small.dcm")))


def test_12_bit_jpeg_extended_says_how_to_read_it():
    """pydicom's JPGExtended.dcm (12-bit lossy, the usual CT/MR case): GDCM and Pillow
    refuse 12-bit, and the reader that decodes it is GPL-3, so olsdesk cannot ship it;
    the sentence names it, and the conversion that needs nothing more."""
    import importlib.util

    if importlib.util.find_spec("libjpeg") is not None:
        assert read_image(real("JPGExtended.dcm")).shape == (1024, 256)
        return
    with pytest.raises(ImageReadError, match="12-bit JPEG Extended is read once the "
                                             "packages pylibjpeg and pylibjpeg-libjpeg are "
                                             "added .*gdcmconv --raw"):
        read_image(real("JPGExtended.dcm"))


def test_a_fifo_is_neither_opened_nor_waited_for(tmp_path):
    from olsdesk.core.data.sources import scan_folder

    (tmp_path / "a").mkdir()
    os.mkfifo(tmp_path / "a" / "pipe")  # extension-less: the DICOM sniffing used to open it
    os.mkfifo(tmp_path / "a" / "pipe.png")
    found = []
    worker = threading.Thread(target=lambda: found.append(scan_folder(tmp_path)), daemon=True)
    worker.start()
    worker.join(10)
    assert found, "the folder scan hung on a FIFO"
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(tmp_path / "a" / "pipe.png")


def test_links_and_permissions_get_true_sentences(tmp_path, monkeypatch):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageReadError, match="symbolic link loop"):
        read_image(loop)
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageReadError, match="link to a file that does not exist"):
        read_image(dangling)
    locked = tmp_path / "locked.png"
    locked.write_bytes(b"\x89PNG....")

    def refuse(*args, **kwargs):  # as for a file another user owns (root reads anything)
        raise PermissionError(13, "Permission denied")

    import olsdesk.core.data.images as images

    monkeypatch.setattr(images, "open", refuse, raising=False)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(locked)


def test_a_name_that_is_not_utf8_never_crashes_the_message(tmp_path):
    name = os.fsdecode(b"scan\xff.png")  # the byte 0xFF is not UTF-8
    (tmp_path / name).write_text("not an image")
    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path / name)
    message = str(caught.value)
    assert "scan\\xff.png" in message
    message.encode("utf-8")  # printable anywhere


def test_suffixes_the_trainer_ignores_are_refused_by_prediction_too(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "x.gif")
    with pytest.raises(ImageReadError, match="PNG, JPEG, TIFF, BMP or DICOM"):
        read_image(tmp_path / "x.gif")


def test_a_folder_named_dl_beside_the_script_does_not_break_dicom(tmp_path):
    """GDCM probes for Python 2's ``dl`` module; a ``dl`` folder on sys.path once left
    pydicom half-imported and every DICOM unreadable."""
    import subprocess
    import sys

    from olsdesk.gui.resources import resource

    (tmp_path / "dl").mkdir()
    sample = resource("samples") / "CT_lung_nodule_jpeg_lossless.dcm"
    code = ("from olsdesk.core.data.images import read_image\n"
            f"print(read_image({str(sample)!r}).shape)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "(64, 64)", result.stderr
