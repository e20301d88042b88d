"""GUI fixtures: an isolated window on tiny demo data, and a guard against stray threads."""

import gc

import pytest
import shiboken6
from PySide6.QtCore import QSettings, Qt, QThread

TINY_PER_CLASS = 6


@pytest.fixture(autouse=True)
def no_thread_left_running(monkeypatch):
    """Fail any test that leaves a QThread running."""
    started = []
    original = QThread.start

    def start(self, *args):
        started.append(self)
        return original(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    running = [t for t in started if shiboken6.isValid(t) and t.isRunning()]
    for thread in running:
        thread.quit()
        thread.wait(10_000)
    gc.collect()  # this test's dead widgets die here, on the GUI thread, not in a later worker
    assert not running, f"{len(running)} QThread(s) left running"


@pytest.fixture
def settings(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, tmp_path, settings, monkeypatch):
    from olsdesk.gui.main_window import MainWindow

    # closing while training asks first; a test's teardown answers "stop it"
    monkeypatch.setattr(MainWindow, "confirm_stop_training", lambda self: True)
    win = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(win)
    exp = win.experiment
    exp.demo_per_class = TINY_PER_CLASS
    exp.set_data("demo")
    exp.model.setCurrentIndex(exp.model.findData("smallcnn"))
    exp.loss.setCurrentIndex(exp.loss.findData("ols"))
    exp.epochs.setValue(2)
    exp.batch_size.setValue(24)
    exp.image_size.setValue(32)
    exp.device.setCurrentIndex(exp.device.findData("cpu"))
    win.show()
    qtbot.waitUntil(lambda: exp.dataset is not None, timeout=20_000)
    yield win
    win.close()


def train(qtbot, window, timeout=60_000):
    """Click Train and wait for the run to end."""
    qtbot.mouseClick(window.experiment.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.last_status != "" and not window.training, timeout=timeout)
    return window.last_status


def open_run(qtbot, window, path, timeout=60_000) -> bool:
    """File → Open run… without the dialog; waits until the run's epochs are read."""
    opened = window.open_run(path)
    if opened:
        qtbot.waitUntil(lambda: not window.session.loading, timeout=timeout)
    return opened
