"""A run followed on disk is read off the GUI thread, one new epoch at a time."""

import threading

from olsdesk.config import RunConfig
from olsdesk.core.runs import RunFollower, RunStore
from olsdesk.core.trainer import Trainer
from tests.gui.conftest import open_run


def test_following_a_training_run_reads_nothing_on_the_gui_thread(
        qtbot, window, tmp_path, monkeypatch):
    config = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=3, device="cpu")
    trainer = Trainer(config, runs_dir=tmp_path / "elsewhere")
    list(trainer.fit())
    store = RunStore(trainer.store.path)
    metrics = store.path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0])  # as if epochs 2 and 3 were still to come
    store.set_status("training")
    writer = store.lock()  # held as the training process holds it

    reads, epochs_read = [], []
    original = RunFollower.read

    def read(self, *args, **kwargs):
        reads.append(threading.current_thread() is threading.main_thread())
        update = original(self, *args, **kwargs)
        epochs_read.extend(r.epoch for r in update.reports)
        return update

    monkeypatch.setattr(RunFollower, "read", read)
    window.session.poll_ms = 50
    assert open_run(qtbot, window, store.path)
    assert [r.epoch for r in window.reports] == [1] and window.session.following
    assert window.state.checkpoint is not None  # the run's best, once read
    # the status says it is followed (not "Replaying", not replaced by "Ready"), and the
    # run bar counts its epochs (no epoch bar: there are no batches to count)
    qtbot.wait(200)
    assert window.message.text().startswith(f"Following {store.path.name}, still training")
    assert window.status.run_progress.value() == 333
    assert not window.status.epoch_progress.isVisible()
    with open(metrics, "a") as fh:  # epoch 2 arrives, appended as training writes it
        fh.write(lines[1])
    qtbot.waitUntil(lambda: len(window.reports) == 2, timeout=10_000)
    assert window.status.run_progress.value() == 666
    assert "epoch 2 of 3 done" in window.message.text()
    with open(metrics, "a") as fh:  # (a rewrite could be read half-way: a false reset)
        fh.write(lines[2])
    store.set_status("finished")
    writer.release()
    qtbot.waitUntil(lambda: not window.session.following and len(window.reports) == 3,
                    timeout=10_000)
    assert [r.epoch for r in window.reports] == [1, 2, 3]
    assert epochs_read == [1, 2, 3]  # each epoch read once
    assert reads and not any(reads)  # never on the GUI thread
    assert "finished" in window.message.text()



def test_closing_while_training_asks_and_the_window_comes_back_as_left(qtbot, window,
                                                                      settings, tmp_path,
                                                                      monkeypatch):
    from PySide6.QtCore import Qt

    from olsdesk.gui.main_window import MainWindow
    from tests.gui.conftest import train

    assert train(qtbot, window) == "finished"
    run = window.run_path
    window.tabs.setCurrentWidget(window.reliability)
    window.resize(1100, 720)
    # Ctrl+Q while a run trains: asked, and "No" keeps the window and the training
    asked = []
    monkeypatch.setattr(MainWindow, "confirm_stop_training",
                        lambda self: asked.append(True) or False)
    window.experiment.epochs.setValue(30)
    qtbot.mouseClick(window.experiment.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.training, timeout=20_000)
    assert not window.close() and asked and window.isVisible() and window.training
    window.stop_training()
    qtbot.waitUntil(lambda: not window.training, timeout=60_000)
    window.open_run(run)
    qtbot.waitUntil(lambda: not window.session.loading, timeout=20_000)
    assert window.close()
    again = MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: not again.session.loading, timeout=20_000)
    assert again.run_path == run and again.tabs.currentWidget() is again.reliability
    # restored (Qt keeps a restored window on its screen: the offscreen one is narrow)
    screen = again.screen().availableGeometry().width()
    assert again.height() == 720 and again.width() >= min(1100, screen) - 4
    again.close()
