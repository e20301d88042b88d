"""One run, one writer; sentences instead of tracebacks; nothing lost when a process is
killed or the disk fills; odd file names survive the log and the terminal."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core.runs import RunStore
from olsdesk.core.trainer import Trainer
from olsdesk.errors import RunError, TrainingError
from tests.helpers import make_class_folder

TINY = dict(demo_per_class=4, image_size=32, batch_size=16, device="cpu")
CLI_TINY = ["--demo-per-class", "4", "--image-size", "32", "--batch-size", "16", "--device",
            "cpu"]


def test_a_run_has_one_writer(tmp_path, capsys):
    trainer = Trainer(RunConfig(epochs=2, **TINY), runs_dir=tmp_path)
    fit = trainer.fit()
    next(item for item in fit if hasattr(item, "val_top1"))  # epoch 1 done, still training
    with pytest.raises(RunError, match=f"being written by process {os.getpid()}"):
        Trainer.from_run(trainer.store.path)
    assert main(["train", "--resume", str(trainer.store.path)]) == 2
    err = capsys.readouterr().err
    assert "is being written by process" in err and err.count("\n") == 1
    assert RunStore.open(trainer.store.path).status == "training"  # followed read-only
    fit.close()
    assert RunStore(trainer.store.path).status == "stopped"
    list(Trainer.from_run(trainer.store.path).fit())  # free again once the writer ended


def test_a_killed_run_shows_interrupted_loses_its_temp_files_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    child = subprocess.Popen([sys.executable, "-m", "olsdesk", "train", "--epochs", "30",
                              "--runs-dir", str(runs), *CLI_TINY],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = list(runs.glob("*/metrics.jsonl"))
            if list(runs.glob("*/checkpoints/latest.pt")) and metrics:  # epoch 1 saved
                break
            time.sleep(0.1)
        else:
            pytest.fail("the training never finished an epoch")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    run = metrics[0].parent
    stale = run / "checkpoints" / ".latest.pt.abc.tmp"  # a write the kill cut short
    stale.write_bytes(b"half a checkpoint")
    store = RunStore.open(run)
    assert store.status == "interrupted" and not stale.exists()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert RunStore(run).status == "finished"
    assert [m["epoch"] for m in RunStore(run).metrics()] == [1, 2]


@pytest.mark.parametrize("make_bad", ["a file", "unwritable"])
def test_a_runs_folder_that_cannot_hold_runs_fails_at_once(tmp_path, capsys, make_bad):
    if make_bad == "a file":
        bad = tmp_path / "runs"
        bad.write_text("not a folder")
        expected = "is a file, not a folder"
    else:
        bad = "/proc/olsdesk-runs"  # even root cannot create folders in /proc
        expected = "runs cannot be written in"
    started = time.monotonic()
    assert main(["train", "--runs-dir", str(bad), *CLI_TINY]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert time.monotonic() - started < 5  # before any data is read


def test_a_device_as_data_is_one_sentence(capsys):
    assert main(["train", "--data", "/dev/null", "--runs-dir", "/tmp"]) == 2
    assert "neither a folder nor a file" in capsys.readouterr().err


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_how_to_resume(tmp_path,
                                                                          monkeypatch):
    import olsdesk.core.runs as runs

    trainer = Trainer(RunConfig(epochs=3, **TINY), runs_dir=tmp_path)
    real_write = runs.atomic_write_bytes

    def full_from_epoch_2(path, data):
        if path.name == "0002.npz":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", full_from_epoch_2)
    with pytest.raises(TrainingError) as caught:
        list(trainer.fit())
    message = str(caught.value)
    assert "epoch 2 could not be saved" in message and "the disk is full" in message
    assert "the checkpoint of epoch 1 is kept" in message and "train --resume" in message
    from olsdesk.core.runs import load_checkpoint

    assert load_checkpoint(trainer.store.checkpoint_path()).epoch == 1
    monkeypatch.setattr(runs, "atomic_write_bytes", real_write)
    rest = [r.epoch for r in Trainer.from_run(trainer.store.path).fit() if hasattr(r, "val_top1")]
    assert rest == [2, 3]


def test_a_disk_full_at_the_first_latest_checkpoint_advises_a_new_start(tmp_path,
                                                                        monkeypatch, capsys):
    """#22 item 7: best.pt was written, latest.pt not; the advice said --resume, which
    then refused ("no checkpoint yet")."""
    import olsdesk.core.runs as runs

    real_write = runs.atomic_write_bytes

    def full_at_latest(path, data):
        if path.name == "latest.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(runs, "atomic_write_bytes", full_at_latest)
    assert main(["train", "--epochs", "2", "--runs-dir", str(tmp_path), *CLI_TINY]) == 1
    err = capsys.readouterr().err
    assert "epoch 1 could not be saved" in err and "the disk is full" in err
    assert "start the run again" in err and "--resume" not in err and "Traceback" not in err
    run = next(tmp_path.iterdir())
    assert (run / "checkpoints" / "best.pt").exists()


def test_names_that_are_not_utf8_survive_training_logs_and_predict(tmp_path, capsys):
    root = make_class_folder(tmp_path / "data", {"a": 5, "b": 5}, size=16)
    odd = root / "a" / os.fsdecode(b"scan\xff.png")
    odd.write_text("not really a png")
    (root / "empty_class").mkdir()
    config = RunConfig(data=str(root), epochs=1, image_size=16, batch_size=4, device="cpu",
                       val_fraction=0.3, test_fraction=0.0, num_workers=0)
    trainer = Trainer(config, runs_dir=tmp_path / "runs")
    reports = [r for r in trainer.fit() if hasattr(r, "val_top1")]
    assert reports[-1].skipped_files == 1
    log = (trainer.store.path / "log.txt").read_text(encoding="utf-8")
    assert "scan\\xff.png" in log
    assert "the folder empty_class holds no images" in log
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trainer.store.checkpoint_path()), str(odd),
                 "--device", "cpu"]) == 1
    assert "scan\\xff.png: ERROR" in capsys.readouterr().out


def test_prediction_streams_its_lines(tmp_path):
    """The first line comes long before the last: predict prints as each batch ends."""
    trainer = Trainer(RunConfig(epochs=1, **TINY), runs_dir=tmp_path / "runs")
    list(trainer.fit())
    folder = make_class_folder(tmp_path / "many", {"x": 160}, size=64)
    child = subprocess.Popen([sys.executable, "-m", "olsdesk", "predict", "--checkpoint",
                              str(trainer.store.checkpoint_path()), str(folder), "--json",
                              "--device", "cpu"], stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    first = child.stdout.readline()
    first_at = time.monotonic() - started
    rest = child.stdout.read().splitlines()
    total = time.monotonic() - started
    child.wait()
    assert json.loads(first)["error"] is None and len(rest) == 159
    assert first_at < total  # not everything at the end


def test_one_comparison_writes_a_study_folder_at_a_time(tmp_path):
    from olsdesk.core.study import Study

    first = Study(RunConfig(epochs=1, **TINY), ["ce"], 1, tmp_path).run()
    next(first)  # the study folder is now held
    with pytest.raises(RunError, match="being written by process"):
        next(Study(RunConfig(epochs=1, **TINY), ["ce"], 1, tmp_path).run())
    first.close()
    assert list(Study(RunConfig(epochs=1, **TINY), ["ce"], 1, tmp_path).run())
