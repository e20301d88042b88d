"""``run_app()``: the QApplication and the main window; ``--self-test`` runs it offscreen."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from olsdesk.gui.resources import resource

SAMPLES = resource("samples")
NO_DISPLAY = ("olsdesk needs a display to open its window; use 'olsdesk train' on this "
              "machine, or set QT_QPA_PLATFORM=offscreen.")


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run_app(self_test: bool = False) -> int:
    if self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        return self_test_main()
    if not has_display():
        print(NO_DISPLAY, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("olsdesk")
    app.setOrganizationName("olsdesk")
    splash = show_splash(app)  # within a second: PyTorch takes several more to load
    from olsdesk.gui.main_window import MainWindow

    window = MainWindow()
    window.show()
    splash.finish(window)
    return app.exec()


def show_splash(app):
    """The olsdesk icon and a line saying what is loading, on screen at once."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QPixmap
    from PySide6.QtWidgets import QSplashScreen

    pixmap = QPixmap(str(resource("olsdesk-128.png")))
    canvas = QPixmap(360, 200)
    canvas.fill(QColor("white"))
    from PySide6.QtGui import QPainter

    painter = QPainter(canvas)
    painter.drawPixmap((360 - pixmap.width()) // 2, 16, pixmap)
    painter.end()
    splash = QSplashScreen(canvas)
    splash.showMessage("olsdesk: loading PyTorch and the panels…",
                       Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignHCenter,
                       QColor("#333333"))
    splash.show()
    app.processEvents()
    return splash


def wait_for(app, condition, timeout: float = 600.0, poll: float = 0.005) -> bool:
    """Run the event loop, as ``app.exec()`` does, until ``condition()`` holds (checked
    every ``poll`` seconds) or ``timeout`` seconds pass."""
    from PySide6.QtCore import QEventLoop, QTimer

    end = time.monotonic() + timeout
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(max(1, round(poll * 1000)))
    check.timeout.connect(lambda: (condition() or time.monotonic() >= end) and loop.quit())
    if not condition():
        check.start()
        loop.exec()
        check.stop()
    return bool(condition())


def isolated_window(folder: str, epochs: int | None = None):
    """A MainWindow with its settings and runs inside ``folder`` (self-test, tools, benches)."""
    from PySide6.QtCore import QSettings

    from olsdesk.gui.main_window import MainWindow

    settings = QSettings(os.path.join(folder, "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, runs_dir=os.path.join(folder, "runs"))
    if epochs is not None:
        window.experiment.epochs.setValue(epochs)
    return window


def panel_is_blank(image) -> bool:
    """True when a rendered panel is a single flat colour (nothing drawn)."""
    import numpy as np
    from PySide6.QtGui import QImage

    image = image.toImage().convertToFormat(QImage.Format.Format_RGB32)
    width, height = image.width(), image.height()
    if width == 0 or height == 0:
        return True
    buffer = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    pixels = buffer.reshape(height, image.bytesPerLine())[:, : width * 4]
    distinct = len(np.unique(pixels.reshape(-1, 4)[::7], axis=0))
    return distinct < 8


def self_test_main(timeout: float = 300.0) -> int:
    """Build the window, train one tiny epoch through the worker, render every panel."""
    from PySide6.QtWidgets import QApplication

    from olsdesk.gui.main_window import MainWindow

    started = time.monotonic()
    app = QApplication.instance() or QApplication(sys.argv)
    with tempfile.TemporaryDirectory(prefix="olsdesk-selftest-") as tmp:
        window = isolated_window(tmp, epochs=1)
        window.experiment.demo_per_class = 6
        window.experiment.set_data("demo")
        window.experiment.batch_size.setValue(24)
        window.experiment.image_size.setValue(32)
        window.experiment.model.setCurrentIndex(window.experiment.model.findData("smallcnn"))
        window.experiment.loss.setCurrentIndex(window.experiment.loss.findData("ols"))
        window.experiment.device.setCurrentIndex(window.experiment.device.findData("cpu"))
        window.show()
        failures: list[str] = []
        wait_for(app, lambda: window.experiment.dataset is not None, timeout)
        window.experiment.train_button.click()
        wait_for(app, lambda: not window.training and window.last_status, timeout)
        if window.last_status != "finished":
            failures.append(f"training did not finish ({window.last_status or 'timed out'}"
                            f"{': ' + window.last_error if window.last_error else ''})")
        if len(window.reports) != 1:
            failures.append(f"expected 1 epoch report, got {len(window.reports)}")
        # an uncompressed DICOM and a JPEG Lossless one (its decoder must ship too)
        samples = [SAMPLES / "CT_lung_nodule.dcm", SAMPLES / "CT_lung_nodule_jpeg_lossless.dcm"]
        window.predict.predict_paths([str(s) for s in samples])
        wait_for(app, lambda: not window.predict.busy, timeout)
        predictions = window.predict.predictions
        for sample in samples:
            done = [p for p in predictions if Path(p.path).name == sample.name]
            if not done or not done[0].ok:
                failures.append(f"predicting {sample.name} failed: "
                                f"{done[0].error if done else window.predict.status.text()}")
        if predictions:
            window.predict.table.selectRow(0)
        for name in window.TABS:  # every tab, as a user looks at each
            window.tabs.setCurrentWidget(getattr(window, name))
            app.processEvents()
            if panel_is_blank(window.render_panel(name)):
                failures.append(f"the {name} panel rendered blank")
        window.close()
        app.processEvents()
    seconds = time.monotonic() - started
    if failures:
        for failure in failures:
            print(f"self-test FAILED: {failure}", file=sys.stderr)
        return 1
    print(f"self-test passed: 1 epoch trained, {' and '.join(s.name for s in samples)} predicted, "
          f"all {len(MainWindow.TABS)} tabs rendered in {seconds:.1f}s")
    return 0
