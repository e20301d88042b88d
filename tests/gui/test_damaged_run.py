"""#22 item 6 in the app: File → Open run on a damaged run is one sentence in the status
line, and the window goes on (no exception, no half-shown run, no IndexError in the
Embedding panel from an epoch file of the wrong shape)."""

import json
import shutil

import numpy as np
import pytest

from olsdesk.config import RunConfig
from olsdesk.core.trainer import Trainer
from tests.gui.conftest import open_run


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    trainer = Trainer(RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=2,
                                device="cpu"), runs_dir=root, run_name="good")
    list(trainer.fit())
    return trainer.store.path


def _wrong_shape(run):
    with np.load(run / "epochs" / "0002.npz") as stored:
        arrays = dict(stored)
    arrays["embedding"] = arrays["embedding"][:, :1]
    np.savez(run / "epochs" / "0002.npz", **arrays)


DAMAGE = {
    "metrics-list": (lambda run: open(run / "metrics.jsonl", "a").write("[1, 2]\n"),
                     "line 3 of metrics-list/metrics.jsonl is not an epoch's record"),
    "metrics-bytes": (lambda run: (run / "metrics.jsonl").write_bytes(b"\xff\xfe\n"),
                      "line 1 of metrics-bytes/metrics.jsonl"),
    "garbage-npz": (lambda run: (run / "epochs" / "0001.npz").write_bytes(b"junk"),
                    "garbage-npz/epochs/0001.npz cannot be used"),
    "missing-npz": (lambda run: (run / "epochs" / "0001.npz").unlink(),
                    "missing-npz/epochs/0001.npz is missing although metrics.jsonl records "
                    "epoch 1"),
    "wrong-shape": (_wrong_shape, "wrong-shape/epochs/0002.npz cannot be used (the "
                                  "embedding is not a list of points)"),
    "run-json-list": (lambda run: (run / "run.json").write_text("[]"),
                      "run-json-list/run.json cannot be read"),
    "config-string-numbers": (
        lambda run: (run / "config.json").write_text(json.dumps(
            {**json.loads((run / "config.json").read_text()), "lr": "0.1"})), None),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_opening_a_damaged_run_is_one_sentence(qtbot, window, good, name):
    damage, says = DAMAGE[name]
    run = good.parent / name
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(good, run, ignore=shutil.ignore_patterns(".lock"))
    damage(run)
    opened = open_run(qtbot, window, run)
    message = window.message.text()
    if says is None:  # the settings cannot be shown; the run still replays
        assert opened and len(window.reports) == 2, message
        return
    qtbot.waitUntil(lambda: says in window.message.text(), timeout=10_000)
    message = window.message.text()
    assert "\n" not in message and "pickle" not in message, message
    assert window.reports == [] or name == "run-json-list"
    assert open_run(qtbot, window, good) and len(window.reports) == 2  # the window goes on


def test_export_on_a_full_disk_is_a_sentence_and_leaves_the_folder_as_it_was(
        qtbot, window, good, tmp_path, monkeypatch):
    """#22 item 7: File → Export wrote 0-byte files, then raised an uncaught OSError."""
    import errno

    import olsdesk.gui.main_window as main_window

    assert open_run(qtbot, window, good)
    out = tmp_path / "export"
    out.mkdir()
    (out / "metrics.csv").write_text("an earlier export")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(main_window, "write_matrix_csv", full)
    monkeypatch.setattr(main_window.QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(out))
    window.choose_export()  # the figures are drawn here, the tables in a worker
    assert window.message.text().startswith("Exporting to")
    qtbot.waitUntil(lambda: "the disk is full" in window.message.text(), timeout=30_000)
    qtbot.waitUntil(lambda: window._exporting is None)
    assert [p.name for p in out.iterdir()] == ["metrics.csv"]
    assert (out / "metrics.csv").read_text() == "an earlier export"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # none left
    window.predict.predictions = []
    monkeypatch.setattr("olsdesk.core.outputs.atomic_write_bytes", full)
    window.predict.export_csv(out / "metrics.csv")
    assert "could not be written (the disk is full)" in window.predict.status.text()
    assert (out / "metrics.csv").read_text() == "an earlier export"
