"""Folders of results written whole or not at all.

``olsdesk evaluate --out``, ``olsdesk compare``'s tables and the app's File → Export all
write a folder of files. ``check_output_folder`` says before the work whether the folder
can be written (a file in the way, /proc, a read-only disk), and ``output_folder`` writes
into a temporary folder beside it that takes the folder's place only once every file is
complete: a full disk or a kill mid-way leaves the folder as it was, never a truncated
CSV or a 0-byte PNG beside files of the previous run.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from olsdesk.core.runs import FILE_MODE, atomic_write_bytes
from olsdesk.errors import OlsdeskError, os_reason, printable

FOLDER_MODE = FILE_MODE | (FILE_MODE & 0o444) >> 2  # searchable where readable


class OutputError(OlsdeskError):
    """Results could not be written; the message is one sentence."""


def check_output_folder(path: str | Path) -> Path:
    """``path`` as a folder results can be written to, checked before any work: it is
    a folder or can be made one, and a file can be created there. OutputError when not."""
    folder = Path(path).expanduser()
    shown = printable(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{shown} is a file, not a folder; choose a folder for the results.")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{shown} cannot be made: {printable(existing)} is a file.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputError(f"results cannot be written in {shown} ({os_reason(exc)}); choose "
                          "another folder.") from None
    return folder


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder to write into; when the block ends without an error its files
    replace those of the same names in ``path`` (a new ``path`` is the temporary folder
    renamed), and files in ``path`` that were not rewritten are kept. A file written
    empty counts as a failed write (a full disk can let a writer close a 0-byte file
    without an error). On any failure nothing in ``path`` changes and OutputError says
    why; a KeyboardInterrupt leaves it unchanged too."""
    folder = check_output_folder(path)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.", suffix=".partial"))
    os.chmod(staging, FOLDER_MODE)  # mkdtemp's own 0700 would hide the results from colleagues
    try:
        try:
            yield staging
            _check_complete(staging)
        except OSError as exc:
            raise OutputError(f"the results could not be written to {printable(folder)} "
                              f"({os_reason(exc)}); nothing in it was changed.") from None
        try:
            _move_into(staging, folder)
        except OSError as exc:
            raise OutputError(f"the results could not be moved into {printable(folder)} "
                              f"({os_reason(exc)}).") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_complete(staging: Path) -> None:
    for file in staging.rglob("*"):
        if file.is_file() and file.stat().st_size == 0:
            raise OSError(errno.EIO, f"{file.name} was written empty: is the disk full?")


def _move_into(staging: Path, folder: Path) -> None:
    if not folder.exists():
        os.replace(staging, folder)  # all at once
        staging.mkdir()  # for the clean-up's rmtree
        return
    for source in sorted(staging.rglob("*")):
        target = folder / source.relative_to(staging)
        if source.is_dir():
            if target.exists() and not target.is_dir():
                target.unlink()
            target.mkdir(exist_ok=True)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(source, target)


def write_output_file(path: str | Path, text: str) -> Path:
    """One results file (a CSV the user named) written whole or not at all: a file of
    that name already there stays as it was when the disk is full. OutputError says why."""
    path = Path(path).expanduser()
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder has that name")
        atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))  # names as on disk
    except OSError as exc:
        raise OutputError(f"{printable(path)} could not be written ({os_reason(exc)}); "
                          "nothing was changed.") from None
    return path
