"""``read_image(path)``: PNG, JPEG, TIFF, BMP and DICOM to a float array in [0, 1].

The result is ``H x W`` for grayscale or ``H x W x 3`` for colour, float32. Anything
that cannot be read raises ``ImageReadError`` whose message is one sentence naming the
file and the true reason (permission denied, a symbolic-link loop, not a regular file,
truncated, no decoder…), so callers can show it as it is. ``read_image`` is a per-file
firewall: whatever goes wrong inside a decoder becomes that file's sentence, with the
traceback logged, and never takes down the batch it belongs to.

DICOM is decoded as PACS exports it: every transfer syntax pydicom has a decoder for
(python-gdcm, a dependency, covers JPEG baseline, extended, lossless, JPEG-LS and JPEG
2000; pydicom itself reads RLE), colour converted to RGB exactly once (by pydicom),
palette colour applied, rescale slope/intercept and the file's window applied to gray
images, MONOCHROME1 inverted. Of a multi-frame file only the middle frame is decoded;
``source_frame`` says which ((61, 120): frame 61 of 120).
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import logging
import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from olsdesk.errors import ImageReadError, first_line, printable

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) Pixel Data, little endian


def is_dicom(path: Path) -> bool:
    """True for a DICOM suffix, or a regular file carrying the 'DICM' preamble magic.
    Never opens anything but a regular file long enough to hold the magic (a FIFO would
    block the caller forever, and /proc's files, all of size 0, can too: /proc/kmsg)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size < 132:
            return False
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return _dicom_magic(head)


def _dicom_magic(head: bytes) -> bool:
    """A DICOM file's 128-byte preamble is followed by 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _check_file(path: Path) -> bytes:
    """The file's first 132 bytes (enough to tell DICOM by its magic), or ImageReadError
    unless ``path`` is a non-empty regular file this process can read."""
    name = printable(path.name)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ImageReadError(f"{name} is a link to a file that does not exist.") from None
        raise ImageReadError(f"{name} does not exist.") from None
    except PermissionError:
        raise ImageReadError(f"{name} cannot be read: permission denied.") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(f"{name} is a symbolic link loop, not an image.") from None
        raise ImageReadError(f"{name} cannot be read ({exc.strerror}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(f"{name} is a folder, not an image.")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(f"{name} is not a regular file (a pipe, socket or device); "
                             "skipped without opening it.")
    if info.st_size == 0:
        raise ImageReadError(f"{name} is empty (0 bytes).")
    try:
        with open(path, "rb") as fh:
            return fh.read(132)
    except PermissionError:
        raise ImageReadError(f"{name} cannot be read: permission denied.") from None
    except OSError as exc:
        raise ImageReadError(f"{name} cannot be read ({exc.strerror}).") from None


def read_image(path: str | Path, min_side: int | None = None,
               eight_bit: bool = False) -> np.ndarray:
    """The image at ``path`` as float32 in [0, 1]; with ``eight_bit``, an image decoded
    as 8-bit values (PNG, JPEG, BMP, most TIFFs) as those uint8 values instead, which
    divided by 255 are the floats (a DICOM or a 16-bit image: floats either way).

    With ``min_side`` set, a large image is reduced at read time by the largest whole
    factor that keeps its shorter side at least ``min_side`` pixels (JPEG's DCT scaling,
    then PIL's box reduction, or block averaging for DICOM), so a huge file never sits
    in memory at full resolution as floats. Callers do not choose ``min_side``: it is
    part of ``Preprocessing``, the one path from file to tensor.
    """
    path = Path(path)
    head = _check_file(path)
    dicom = path.suffix.lower() in DICOM_SUFFIXES or _dicom_magic(head)
    if not dicom and path.suffix.lower() not in IMAGE_SUFFIXES:  # as the folder scan decides
        raise ImageReadError(f"{printable(path.name)} is not an image olsdesk reads (PNG, JPEG, "
                             "TIFF, BMP or DICOM).")
    try:
        image = _read_dicom(path) if dicom else _read_pil(path, min_side)
        if image.dtype == np.uint8:
            if eight_bit and (min_side is None or _reduction(image.shape, min_side) < 2):
                return np.ascontiguousarray(image)
            image = image.astype(np.float32) / 255.0
        if min_side is not None:
            image = _shrink(image, min_side)
        if not np.all(np.isfinite(image)):
            image = np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
        return np.ascontiguousarray(image, dtype=np.float32)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{printable(path.name)} is too large to decode in the memory "
                             "available.") from None
    except Exception as exc:  # noqa: BLE001 - the firewall: any decoder failure is this file's
        log.warning("reading %s failed", printable(str(path)), exc_info=exc)
        detail = first_line(exc)
        raise ImageReadError(f"{printable(path.name)} could not be decoded ({detail}).") from None


_EXIF_ORIENTATION = 0x0112


def _orientations() -> dict:
    """EXIF orientation -> the transpose that shows the picture upright (a phone's or a
    scanner's JPEG is often stored sideways with orientation 6)."""
    from PIL import Image

    t = Image.Transpose
    return {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
            6: t.ROTATE_270, 7: t.TRANSVERSE, 8: t.ROTATE_90}


def _read_pil(path: Path, min_side: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    name = printable(path.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                turn = _orientations().get(img.getexif().get(_EXIF_ORIENTATION, 1))
                if min_side is not None and img.format == "JPEG":
                    img.draft(img.mode, (min_side, min_side))  # keeps both sides >= min_side
                if min_side is not None and (factor := _reduction(img.size, min_side)) > 1:
                    img = _reducible(img).reduce(factor)
                img.load()
                if turn is not None:  # upright, as every viewer shows it
                    img = img.transpose(turn)
                return _pil_to_array(img)
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{name} is not an image olsdesk can read.") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name} is too large to open safely ({exc}).") from exc
    except (OSError, SyntaxError) as exc:  # the decoder's own: the file's bytes are wrong
        text = str(exc)
        if "not available" in text or "unsupported" in text.lower():  # a missing codec
            raise ImageReadError(f"{name} uses an encoding this installation cannot decode "
                                 f"({text}).") from exc
        raise ImageReadError(f"{name} is truncated or corrupt ({text}).") from exc


def _reducible(img):
    """``img`` in a mode Pillow's ``reduce()`` takes, holding the same values: 1-bit as
    8-bit gray, a palette as its colours, 16-bit integers as 32-bit ones (reduce rejects
    modes 1, P and I;16, and a valid X-ray export is refused as corrupt otherwise)."""
    if img.mode == "1":
        return img.convert("L")
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img


def _pil_to_array(img) -> np.ndarray:
    """An 8-bit image as its uint8 values (``read_image`` divides them by 255); any other
    as float32 in [0, 1]."""
    mode = img.mode
    if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode in ("1", "L", "LA"):
            return np.asarray(img.convert("L"), dtype=np.uint8)
        return _collapse_gray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    # 16-bit, 32-bit integer and float images: stretch to the image's own range.
    return _stretch(np.asarray(img, dtype=np.float64))


def _collapse_gray(rgb: np.ndarray) -> np.ndarray:
    """An RGB image whose three channels are equal is grayscale: keep one channel."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0]
    return rgb


def _pydicom():
    """pydicom, imported so that GDCM's decoder plugin loads wherever olsdesk runs from.

    GDCM's loader tries ``import dl`` (a Python 2 module) and uses it if found; a folder
    named ``dl`` on sys.path (a script started beside a downloads folder) is found
    instead, GDCM fails, and pydicom is left half-imported, so every DICOM after it
    fails too. Marking ``dl`` as absent makes GDCM load as it does on any Python 3.
    """
    if "pydicom" not in sys.modules and "dl" not in sys.modules:
        spec = importlib.util.find_spec("dl")
        if spec is not None and not hasattr(importlib.import_module("dl"), "RTLD_NOW"):
            sys.modules["dl"] = None
    import pydicom

    return pydicom


def _open_dicom(path: Path):
    """The dataset, read leniently: a file without the 128-byte preamble is read with
    ``force`` when it parses as DICOM. A deflated file is inflated here, within the size
    its header declares (pydicom would inflate it whole first)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    name = printable(path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
        except Exception:  # noqa: BLE001 - no usable header: dcmread says what it is
            meta = None
        if meta is not None and meta.get("TransferSyntaxUID") == DEFLATED:
            return _read_deflated(path, meta)
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            pass
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            raise ImageReadError(f"{name} is not a readable DICOM file ({exc}).") from None
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - not DICOM at all
            ds = None
    if ds is None or len(ds) < 3:  # a stray element or two parse from almost anything
        raise ImageReadError(f"{name} has no DICOM header, and its content does not read as "
                             "DICOM.")
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        from pydicom.uid import ImplicitVRLittleEndian

        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the default for headerless files
    return ds


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_INFLATE_CHUNK = 1 << 20
_HEADER_BYTES = 4 << 20  # what a deflated file may inflate to before its Rows and Columns


def pixel_limit() -> int:
    """The most pixels one image may declare: Pillow's decompression-bomb error limit
    (twice ``Image.MAX_IMAGE_PIXELS``, 179 M by default), for DICOM as for PNG."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS or 2**62)


def _check_declared_size(ds, name: str) -> None:
    """Refuse, before any decoding, a frame whose header declares more pixels than
    ``pixel_limit`` (a compressed frame can declare any size)."""
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return  # pydicom says what is wrong with it
    if rows * columns > pixel_limit():
        raise ImageReadError(f"{name} declares {rows} x {columns} pixels "
                             f"({rows * columns / 1e6:.0f} M), more than the "
                             f"{pixel_limit() / 1e6:.0f} M olsdesk decodes safely.")


def _declared_bytes(ds) -> int:
    """The pixel data's size as the header declares it, every frame."""
    def number(key, default):
        try:
            return max(1, int(ds.get(key, default) or default))
        except (TypeError, ValueError):
            return default

    bits = number("BitsAllocated", 16)
    return (number("Rows", 1) * number("Columns", 1) * number("SamplesPerPixel", 1)
            * _frame_count(ds) * ((bits + 7) // 8))


def _read_deflated(path: Path, meta):
    """A Deflated Explicit VR Little Endian file, inflated in chunks: its header (the
    first few MB) is read first, its declared size checked, and the rest inflated only
    up to what that header declares, so a small file cannot expand without bound."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    name = printable(path.name)
    length = meta.get("FileMetaInformationGroupLength")
    if length is None:
        raise ImageReadError(f"{name} is deflated without a file meta group length, so "
                             "where its data starts is unknown.")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    parts: list[bytes] = []
    size, limit, header = 0, _HEADER_BYTES, None
    with open(path, "rb") as fh:
        fh.seek(128 + 4 + 12 + int(length))  # preamble, "DICM", the group length element
        while True:
            chunk = inflater.unconsumed_tail or fh.read(_INFLATE_CHUNK)
            data = inflater.decompress(chunk, limit - size + 1) if chunk else inflater.flush()
            parts.append(data)
            size += len(data)
            if header is None and (size >= _HEADER_BYTES or not chunk):
                header = _deflated_header(b"".join(parts), name)
                _check_declared_size(header, name)
                limit = _HEADER_BYTES + _declared_bytes(header)
            if size > limit:
                raise ImageReadError(f"{name} inflates to more than its header declares "
                                     f"({_declared_bytes(header or {}) / 2**20:.0f} MiB of "
                                     "pixel data): it is damaged or crafted.")
            if not chunk:
                break
    try:
        ds = read_dataset(DicomBytesIO(b"".join(parts)), is_implicit_VR=False,
                          is_little_endian=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for one cause
        raise ImageReadError(f"{name} is deflated DICOM whose content does not parse "
                             f"({first_line(exc)}).") from None
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # its data set is inflated now
    ds.file_meta = meta
    return ds


def _deflated_header(data: bytes, name: str):
    """The elements before the pixel data of an inflated prefix."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    def at_pixels(tag, vr, length) -> bool:
        return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)

    try:
        return read_dataset(DicomBytesIO(data), is_implicit_VR=False, is_little_endian=True,
                            stop_when=at_pixels)
    except Exception as exc:  # noqa: BLE001 - a header longer than 4 MB, or not DICOM
        raise ImageReadError(f"{name} is deflated DICOM whose header does not parse "
                             f"({first_line(exc)}).") from None


def _frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def source_frame(path: str | Path) -> tuple[int, int] | None:
    """(frame, frames) when the model sees one frame of several: the middle frame of a
    multi-frame DICOM, counted from 1 (header only is read); None otherwise."""
    path = Path(path)
    if not is_dicom(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _pydicom().dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - only a note; reading reports real problems
        return None
    frames = _frame_count(ds)
    return (frames // 2 + 1, frames) if frames > 1 else None


def _read_dicom(path: Path) -> np.ndarray:
    name = printable(path.name)
    ds = _open_dicom(path)
    if len(ds) == 0:
        raise ImageReadError(f"{name} holds a DICOM header but no data after it: the file is "
                             "truncated.")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        with open(path, "rb") as fh:
            if "Rows" in ds and _PIXEL_TAG in fh.read():
                raise ImageReadError(f"{name} is truncated: its pixel data ends before the "
                                     "image does.")
        raise ImageReadError(f"{name} is a DICOM file without pixel data (no image to show).")
    _check_declared_size(ds, name)
    frames = _frame_count(ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # one frame only; YBR_* arrive as RGB, converted once, by pydicom
            ds.pixel_array_options(index=frames // 2 if frames > 1 else None)
            pixels = np.asarray(ds.pixel_array)
        for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if key in ds:  # the encoded bytes (and pydicom's cached array) are not needed
                del ds[key]  # now, and would stay in memory beside the floats
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for one cause
        raise ImageReadError(_dicom_decode_message(ds, name, exc)) from None
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3 and pixels.shape[-1] >= 3:
        return _collapse_gray(_stretch(_floats(pixels[..., :3])))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _stretch(_floats(pixels))
    return _dicom_gray_to_display(ds, _floats(pixels), photometric)


def _floats(pixels: np.ndarray) -> np.ndarray:
    """A new float array of ``pixels`` for the display transforms to work on in place:
    float32 for 8- and 16-bit data (exact, and half of float64's memory at full
    resolution), float64 for wider data, whose values float32 would round."""
    wide = pixels.dtype.itemsize > 2 or pixels.dtype.kind == "f"
    return pixels.astype(np.float64 if wide else np.float32)


def _stretch(values: np.ndarray) -> np.ndarray:
    """``values`` stretched to [0, 1] by its own range, in place where it is float32. A
    float image's NaN and infinite pixels (a masked region, a division by zero) do not
    take the range with them (one NaN made the whole image zeros): the range is that of
    the finite pixels, NaN and -inf show as its bottom, +inf as its top."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = np.isfinite(values)
        if not finite.any():
            raise ValueError("it holds no finite pixel value")
        lo, hi = float(values[finite].min()), float(values[finite].max())
        np.clip(np.nan_to_num(values, copy=False, nan=lo, posinf=hi, neginf=lo), lo, hi,
                out=values)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    values -= lo
    values /= hi - lo
    return values.astype(np.float32, copy=False)


def _dicom_gray_to_display(ds, values: np.ndarray, photometric: str) -> np.ndarray:
    """Rescale slope/intercept, then the file's window (or the image's own range), on
    ``values`` in place."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1:
        values *= slope
    if intercept != 0:
        values += intercept
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 1:
        # DICOM PS3.3 C.11.2.1.2 linear VOI function.
        lo = center - 0.5 - (width - 1) / 2
        hi = center - 0.5 + (width - 1) / 2
        values -= lo
        values /= hi - lo
        out = np.clip(values, 0.0, 1.0, out=values).astype(np.float32, copy=False)
    else:
        out = _stretch(values)
    if photometric == "MONOCHROME1":
        np.subtract(1.0, out, out=out)
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
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # pydicom lists each decoder's reason after a general first line
    detail = "; ".join(lines[1:] if len(lines) > 1 else lines) or type(exc).__name__
    if syntax is not None and getattr(syntax, "is_compressed", False):
        if _decoder_available(syntax):
            hint = ""
            if "12-bit precision" in detail and "pylibjpeg:" not in detail:
                # pylibjpeg-libjpeg reads it (pydicom uses it once installed), but it is
                # GPL-3 and olsdesk is MIT: the user can add it, olsdesk cannot ship it
                hint = ("; 12-bit JPEG Extended is read once the packages pylibjpeg and "
                        "pylibjpeg-libjpeg are added to olsdesk's Python environment (GPL-3, "
                        "so olsdesk does not ship them), or convert the file with gdcmconv --raw")
            return (f"{name} is compressed as {syntax_name} and could not be decoded by the "
                    f"decoders olsdesk ships ({detail}){hint}.")
        return f"{name} is compressed as {syntax_name}, which no decoder olsdesk has reads."
    return f"{name} has pixel data that cannot be decoded ({detail})."


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
    """Block-average an image by ``_reduction`` (a no-op when it is 1): rows first, on a
    view, then columns on the small result, so no full-resolution copy is made."""
    factor = _reduction(image.shape, min_side)
    if factor < 2:
        return image
    h = image.shape[0] // factor * factor
    w = image.shape[1] // factor * factor
    rows = image[:h].reshape((h // factor, factor) + image.shape[1:])
    rows = rows.mean(axis=1, dtype=np.float64)[:, :w]
    blocks = rows.reshape((h // factor, w // factor, factor) + image.shape[2:])
    return blocks.mean(axis=2).astype(np.float32)
