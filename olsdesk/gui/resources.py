"""Where the app's files are: icons, the .desktop file, the sample images.

They live in the repository's top-level ``resources/`` folder and are installed as the
``olsdesk.resources`` package (pyproject's package-dir), so an editable install, a
wheel and the PyInstaller bundle (which copies them to ``olsdesk/resources``) all find
them here.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path


def resources_dir() -> Path:
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "olsdesk" / "resources"
    return Path(str(files("olsdesk.resources")))


def resource(name: str) -> Path:
    """A file in the resources folder, e.g. ``resource("samples")``."""
    return resources_dir() / name
