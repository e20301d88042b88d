"""read_image on every format, against hand-computed pixel values."""

import numpy as np
import pytest
from PIL import Image

from olsdesk.core.data.images import ImageReadError, read_image
from tests.helpers import truncate, write_dicom, write_png


def test_png_gray_8bit(tmp_path):
    arr = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    out = read_image(write_png(tmp_path / "a.png", arr))
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)
    assert out.dtype == np.float32


def test_rgb_png_with_equal_channels_is_gray_and_colour_stays_colour(tmp_path):
    gray = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4)[:, :, None] * 10, 3, axis=2)
    assert read_image(write_png(tmp_path / "g.png", gray)).ndim == 2
    colour = gray.copy()
    colour[..., 0] = 200
    out = read_image(write_png(tmp_path / "c.png", colour))
    assert out.shape == (4, 4, 3)


def test_16bit_png_is_stretched_to_its_range(tmp_path):
    arr = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    path = tmp_path / "a16.png"
    Image.fromarray(arr).save(path)
    np.testing.assert_allclose(read_image(path), [[0, 0.25], [0.5, 1.0]], atol=1e-6)


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".bmp"])
def test_other_formats(tmp_path, suffix):
    arr = np.full((8, 8), 128, dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(arr).save(path)
    np.testing.assert_allclose(read_image(path), 128 / 255, atol=2 / 255)


def test_truncated_png_raises_one_sentence(tmp_path):
    rng = np.random.default_rng(0)
    path = write_png(tmp_path / "t.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="t.png is truncated or corrupt"):
        read_image(truncate(path))


def test_empty_and_non_image_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_dicom_16bit_rescale_and_window(tmp_path):
    # stored 0, 1000, 2000, 3000 with slope 1, intercept -1024 -> HU -1024, -24, 976, 1976
    stored = np.array([[0, 1000], [2000, 3000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, intercept=-1024, window=(40, 400))
    # window 40/400: lo = 40 - 0.5 - 199.5 = -160, hi = 239 -> (HU + 160) / 399 clipped
    expected = np.clip((np.array([[-1024, -24], [976, 1976]]) + 160) / 399, 0, 1)
    np.testing.assert_allclose(read_image(path), expected, atol=1e-6)


def test_dicom_without_window_uses_min_max(tmp_path):
    stored = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    path = write_dicom(tmp_path / "mr.dcm", stored, slope=2.0)
    np.testing.assert_allclose(read_image(path), [[0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_image(path), [[1.0, 0.75], [0.5, 0.0]], atol=1e-6)


def test_dicom_without_extension_is_recognised(tmp_path):
    path = write_dicom(tmp_path / "IM0001", np.array([[0, 10]], dtype=np.uint16))
    np.testing.assert_allclose(read_image(path), [[0, 1]])


def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", None)
    with pytest.raises(ImageReadError, match="without pixel data"):
        read_image(path)


def test_dicom_with_a_syntax_no_shipped_decoder_reads_names_the_syntax(tmp_path):
    from pydicom.uid import UID  # High-Throughput JPEG 2000: neither GDCM nor Pillow reads it

    path = write_dicom(tmp_path / "htj2k.dcm", np.zeros((8, 8), dtype=np.uint16),
                       transfer_syntax=UID("1.2.840.10008.1.2.4.201"))
    with pytest.raises(ImageReadError, match="compressed as High-Throughput JPEG 2000 Image "
                                             "Compression .Lossless Only., which no decoder"):
        read_image(path)


@pytest.mark.parametrize("syntax", ["JPEGLosslessSV1", "JPEGLSLossless", "JPEG2000Lossless",
                                    "JPEGBaseline8Bit", "RLELossless"])
def test_the_common_pacs_syntaxes_have_a_decoder(syntax):
    """Decoders are dependencies: a PACS export never needs a pip install (the bundle has none)."""
    import pydicom.uid
    from pydicom.pixels import get_decoder

    assert get_decoder(getattr(pydicom.uid, syntax)).is_available


def test_dicom_with_corrupt_compressed_data(tmp_path):
    from pydicom.uid import JPEG2000Lossless  # Pillow decodes JPEG 2000, but not garbage

    path = write_dicom(tmp_path / "j2k.dcm", np.zeros((8, 8), dtype=np.uint16),
                       transfer_syntax=JPEG2000Lossless)
    with pytest.raises(ImageReadError, match="could not be decoded"):
        read_image(path)


def test_huge_image_is_read_reduced(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.full((4000, 3000), 77, dtype=np.uint8)).save(path)
    out = read_image(path, min_side=128)
    assert 128 <= min(out.shape) < 2 * 128
    assert out.mean() == pytest.approx(77 / 255, abs=1e-3)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm",
                                  "JPEG2000.dcm"])
def test_real_dicom_files_shipped_with_pydicom(name):
    """Real scanner files (pydicom's bundled test data), uncompressed and compressed."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    image = read_image(path)
    ds = pydicom.dcmread(path)
    assert image.shape == (ds.Rows, ds.Columns)
    assert 0.0 <= image.min() < image.max() <= 1.0
    # the same ordering of pixel values as the stored data (a monotone display mapping)
    raw = ds.pixel_array.astype(float).ravel()
    shown = image.ravel()
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(shown[order]) >= -1e-6)


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "I;16B", "L", "RGB", "I"])
def test_every_mode_pillow_opens_is_read_at_every_size(tmp_path, mode):
    """A chest X-ray export is often 16-bit (or palette, or 1-bit) and 2048 px: read at
    read-time reduction as at full size. An image of constant 6 x 6 blocks keeps its values
    (and its range) under the 6x reduction, so both reads must agree with the full-size
    read reduced by numpy."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 2, (224, 336)) if mode == "1" else rng.integers(0, 256, (224, 336))
    pixels = np.kron(blocks, np.ones((6, 6), dtype=np.int64))  # 1344 x 2016
    if mode in ("I;16", "I;16B", "I"):
        pixels = pixels * 200
    if mode == "1":
        image = Image.fromarray((pixels * 255).astype(np.uint8)).convert("1")
    elif mode == "P":
        image = Image.fromarray(pixels.astype(np.uint8), "L").convert("P")
    elif mode == "RGB":
        image = Image.fromarray(np.stack([pixels, 255 - pixels, pixels // 2], -1)
                                .astype(np.uint8), "RGB")
    elif mode == "L":
        image = Image.fromarray(pixels.astype(np.uint8), "L")
    else:
        image = Image.fromarray(pixels.astype(np.int32), "I").convert(mode) \
            if mode != "I" else Image.fromarray(pixels.astype(np.int32), "I")
    path = tmp_path / ("x.tif" if mode in ("I;16B", "I") else "x.png")
    image.save(path)
    assert Image.open(path).mode in (mode, "I;16") or mode == "I;16B"
    full = read_image(path)
    reduced = read_image(path, min_side=224)  # 1344 // 224 = 6: a reduction by 6
    assert reduced.shape[:2] == (224, 336)
    expected = full.reshape(224, 6, 336, 6, *full.shape[2:]).mean(axis=(1, 3))
    np.testing.assert_allclose(reduced, expected, atol=2 / 255)


# Decompression bombs (#22 item 4): the declared size is checked before anything is
# decoded or inflated, and a large DICOM is windowed as float32 and reduced before it
# is held as floats.

def _deflated(path, rows, columns, pixels):
    """A deflated DICOM whose header declares rows x columns over ``pixels``' bytes."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _peak_mib(call) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_a_deflated_dicom_declaring_16000_squared_is_refused_before_it_is_inflated(tmp_path):
    # 512 MB of zeros deflate to about 0.5 MB; today it is inflated whole and decoded
    path = _deflated(tmp_path / "bomb.dcm", 16000, 16000, np.zeros((4000, 4000), np.uint16))
    assert path.stat().st_size < 2**20
    errors = []

    def read():
        with pytest.raises(ImageReadError, match=r"bomb.dcm declares 16000 x 16000 pixels") as exc:
            read_image(path, 224)
        errors.append(str(exc.value))

    assert _peak_mib(read) < 16
    assert "\n" not in errors[0] and errors[0].endswith(".")


def test_a_deflated_dicom_that_inflates_past_its_declared_size_is_refused(tmp_path):
    pixels = np.zeros((2048, 2048), np.uint16)  # 8 MiB of pixel data under a 64 x 64 header
    path = _deflated(tmp_path / "liar.dcm", 64, 64, pixels)
    with pytest.raises(ImageReadError, match="liar.dcm inflates to more than its header"):
        read_image(path, 224)


def test_a_deflated_dicom_reads_as_its_uncompressed_twin(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (300, 260), dtype=np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, window=(2000, 3000))
    deflated = _deflated(tmp_path / "d.dcm", 300, 260, pixels)
    import pydicom

    ds = pydicom.dcmread(deflated)
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    ds.save_as(deflated, enforce_file_format=True)
    for side in (None, 64):
        np.testing.assert_array_equal(read_image(deflated, side), read_image(plain, side))


def test_an_uncompressed_dicom_declaring_more_pixels_than_pil_opens_is_refused(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "big.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 20000, 10000
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"big.dcm declares 20000 x 10000 pixels"):
        read_image(path, 224)


def test_a_large_16bit_dicom_is_reduced_before_it_is_held_as_floats(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 4096, (4000, 4000), dtype=np.uint16)  # 30.5 MiB raw
    path = write_dicom(tmp_path / "xray.dcm", pixels, slope=1.0, intercept=-1024.0,
                       window=(400, 1500))
    out = []
    peak = _peak_mib(lambda: out.append(read_image(path, 224)))
    # before: 549 MiB (the file, uint16, float64 rescaled, float64 windowed, float32)
    assert peak < 5 * 30.5, peak
    # the same numbers as windowing at full resolution in float64, then block-averaging
    values = pixels.astype(np.float64) - 1024.0
    lo, hi = 400 - 0.5 - 1499 / 2, 400 - 0.5 + 1499 / 2
    full = np.clip((values - lo) / (hi - lo), 0, 1)
    factor = 4000 // 224
    h = 4000 // factor * factor
    expected = full[:h, :h].reshape(h // factor, factor, h // factor, factor).mean(axis=(1, 3))
    assert out[0].shape == expected.shape and out[0].dtype == np.float32
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_a_float_tiff_with_nan_and_inf_pixels_keeps_its_picture(tmp_path):
    """One NaN pixel took the image's range with it: the whole image read as zeros."""
    values = np.linspace(-5.0, 15.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    values[3, 4], values[10, 10], values[20, 20] = np.nan, np.inf, -np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "masked.tif")
    got = read_image(tmp_path / "masked.tif")
    finite = np.isfinite(values)
    lo, hi = values[finite].min(), values[finite].max()
    expected = (values - lo) / (hi - lo)
    np.testing.assert_allclose(got[finite], expected[finite], atol=1e-6)
    assert (got[3, 4], got[10, 10], got[20, 20]) == (0.0, 1.0, 0.0)
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(
        tmp_path / "void.tif")
    with pytest.raises(ImageReadError, match="void.tif could not be decoded .it holds no "
                                             "finite pixel value"):
        read_image(tmp_path / "void.tif")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_do(tmp_path, orientation):
    """A JPEG stored sideways with its EXIF orientation was read sideways. Compared with
    Pillow's own ImageOps.exif_transpose of the full-size file, at full size and reduced
    at read time."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    pixels = np.kron(rng.integers(0, 255, (6, 9)), np.ones((40, 40))).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "sideways.jpg"
    image.save(path, quality=98, exif=exif)
    with Image.open(path) as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored).convert("L"), np.float32) / 255
    got = read_image(path)
    assert got.shape == upright.shape
    np.testing.assert_allclose(got, upright, atol=1e-6)
    small = read_image(path, 60)  # reduced first, then turned
    assert small.shape[0] / small.shape[1] == pytest.approx(upright.shape[0] / upright.shape[1],
                                                            rel=0.05)
    assert np.corrcoef(small.ravel(), np.asarray(Image.fromarray(
        (upright * 255).astype(np.uint8)).resize(small.shape[::-1]), np.float32).ravel())[0, 1] > 0.9
