"""Render resources/olsdesk.svg to the PNG sizes desktops and the window use."""

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 - needed for painting
    renderer = QSvgRenderer(str(RESOURCES / "olsdesk.svg"))
    for size in (16, 32, 48, 64, 128, 256):
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        renderer.render(painter)
        painter.end()
        name = "olsdesk.png" if size == 256 else f"olsdesk-{size}.png"
        image.save(str(RESOURCES / name))
    print("icons written to", RESOURCES)


if __name__ == "__main__":
    main()
