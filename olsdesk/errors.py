"""The errors a user can cause, under one base class so callers catch one thing.

Every message is one sentence for the user: show it as it is. Importing this module
pulls in neither torch nor Qt.
"""

from __future__ import annotations

import errno
import os


class OlsdeskError(Exception):
    """Something the user can fix (a setting, a file, a folder); the message says what."""


class ConfigError(OlsdeskError, ValueError):
    """A setting that cannot work."""


class DataError(OlsdeskError, ValueError):
    """The data a user pointed to cannot be used."""


class ImageReadError(OlsdeskError):
    """A file that is not a readable image."""


class WeightsError(OlsdeskError, ValueError):
    """A weights file that cannot start the chosen model."""


class RunError(OlsdeskError, ValueError):
    """A folder that is not a usable run, or a checkpoint that cannot be opened."""


class PredictorError(OlsdeskError, ValueError):
    """A checkpoint that cannot be used for prediction."""


class TrainingError(OlsdeskError, RuntimeError):
    """Training cannot go on (a NaN loss, no readable image)."""


class UsageError(OlsdeskError):
    """A bad command-line invocation: the CLI exits 2 with the message."""


def first_line(exc: BaseException) -> str:
    """An exception in a few words: its message's first line, or its type's name."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# control characters as \xNN: an ANSI escape in a file name recoloured or cleared the
# user's terminal. A newline stays in a message (tracebacks in the log) unless one line
# is asked for
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0)) if c != 0x0a}
_ONE_LINE = {**_CONTROLS, 0x0a: "\\n"}


def printable(text: str | os.PathLike, one_line: bool = False) -> str:
    """A file name, path or message safe to print and log: bytes that are not valid UTF-8
    (kept by Python as lone surrogates) and control characters shown as \\xNN escapes
    instead of crashing or steering the output; ``one_line`` escapes newlines too (a
    class name with a newline split predict's one line a file)."""
    text = os.fspath(text)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_ONE_LINE if one_line else _CONTROLS)


def os_reason(exc: OSError) -> str:
    """An OSError in a few words: "the disk is full", or the system's own."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return exc.strerror or str(exc)
