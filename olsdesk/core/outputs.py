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
from collections.abc import Callable, Iterator
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


class StagedFolder:
    """A temporary folder beside ``path`` to write into, then moved into place: what
    ``output_folder`` does, in two steps for work that starts on one thread (the app's
    figures, drawn by Qt on the GUI thread) and ends on another (the tables, in a
    worker). ``finish`` runs the rest, checks and moves; ``discard`` drops it all."""

    def __init__(self, path: str | Path) -> None:
        self.folder = check_output_folder(path)
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self.folder.name}.",
                                             suffix=".partial"))
        os.chmod(self.staging, FOLDER_MODE)  # mkdtemp's 0700 would hide the results

    def failed(self, exc: OSError) -> OutputError:
        return OutputError(f"the results could not be written to {printable(self.folder)} "
                           f"({os_reason(exc)}); nothing in it was changed.")

    def finish(self, write: Callable[[Path], list[Path]] | None = None) -> list[Path]:
        """``write(staging)`` (the paths it wrote), then the files moved into the folder:
        the paths they have there. OutputError says why not; the folder is then as it
        was. The staging folder is gone afterwards either way."""
        try:
            try:
                written = write(self.staging) if write is not None else []
                _check_complete(self.staging)
            except OSError as exc:
                raise self.failed(exc) from None
            try:
                _move_into(self.staging, self.folder)
            except OSError as exc:
                raise OutputError(f"the results could not be moved into "
                                  f"{printable(self.folder)} ({os_reason(exc)}).") from None
            return [self.folder / path.relative_to(self.staging) for path in written]
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder to write into; when the block ends without an error its files
    replace those of the same names in ``path`` (a new ``path`` is the temporary folder
    renamed), and files in ``path`` that were not rewritten are kept. A file written
    empty counts as a failed write (a full disk can let a writer close a 0-byte file
    without an error). On any failure nothing in ``path`` changes and OutputError says
    why; a KeyboardInterrupt leaves it unchanged too."""
    staged = StagedFolder(path)
    try:
        try:
            yield staged.staging
        except OSError as exc:
            raise staged.failed(exc) from None
        staged.finish()
    finally:
        staged.discard()


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
