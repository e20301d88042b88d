"""The size check every torch file passes before ``torch.load`` unpacks it.

``torch.save`` stores its members uncompressed in a zip archive, so a real checkpoint
or state dict unpacks to about its own size. A crafted file can declare deflated
members that unpack to gigabytes from a few megabytes (a zip bomb); the zip's own
directory says so before any byte is inflated, and the file is refused then.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from olsdesk.errors import OlsdeskError, printable

# the largest olsdesk model (VGG-19) with AdamW's two moment buffers is about 1.7 GB
MAX_UNPACKED_BYTES = 4 * 1024**3


def check_archive(path: Path, error: type[OlsdeskError], what: str,
                  require_zip: bool = True) -> None:
    """Raise ``error`` when ``path`` would unpack to far more than it holds, or to more
    than any olsdesk model needs. A file that is not a zip is refused as "not <what>"
    when ``require_zip`` (olsdesk always writes zips), and otherwise left to torch's
    legacy reader, which unpacks nothing."""
    name = printable(path.name)
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        if require_zip:
            raise error(f"{name} is not {what}.") from None
        return
    size = path.stat().st_size
    noun = what.split(" ", 1)[1] if what.startswith(("a ", "an ")) else what
    if unpacked > MAX_UNPACKED_BYTES or unpacked > 4 * size + 64 * 1024**2:
        raise error(f"{name} would unpack to {unpacked / 1024**3:.1f} GB from a "
                    f"{size / 1024**2:.1f} MB file; no {noun} "
                    "does that, so it was not opened.")
