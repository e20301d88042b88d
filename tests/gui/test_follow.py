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
    metrics.write_text("".join(lines[:2]))  # epoch 2 arrives
    qtbot.waitUntil(lambda: len(window.reports) == 2, timeout=10_000)
    metrics.write_text("".join(lines))
    store.set_status("finished")
    writer.release()
    qtbot.waitUntil(lambda: not window.session.following and len(window.reports) == 3,
                    timeout=10_000)
    assert [r.epoch for r in window.reports] == [1, 2, 3]
    assert epochs_read == [1, 2, 3]  # each epoch read once
    assert reads and not any(reads)  # never on the GUI thread
    assert "finished" in window.message.text()

