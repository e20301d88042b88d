"""Opening a file that must be a regular one, without ever blocking on one that is not.

``open()`` on a FIFO waits for a writer (reading) or a reader (writing) forever: a pipe
named ``metrics.jsonl``, ``.lock`` or ``--config c.json`` hung the CLI and the app. Here
the file is opened non-blocking, checked with ``fstat``, and refused with an ``OSError``
whose ``strerror`` is the sentence the callers already relay for any unreadable file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

NOT_REGULAR = "not a regular file (a pipe, a socket or a device?)"
_FLAGS = {"r": os.O_RDONLY, "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
          "a+": os.O_RDWR | os.O_APPEND | os.O_CREAT}


def open_regular(path: str | Path, mode: str = "r", **kwargs):
    """``open(path, mode, **kwargs)`` for a regular file only (modes r, a and a+, text or
    binary); OSError with ``NOT_REGULAR`` for anything else, at once."""
    flags = _FLAGS[mode.replace("b", "")] | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise OSError(errno.EINVAL, NOT_REGULAR, str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, NOT_REGULAR, str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | Path) -> bytes:
    with open_regular(path, "rb") as fh:
        return fh.read()


def read_regular_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    with open_regular(path, "r", encoding=encoding, errors=errors) as fh:
        return fh.read()
