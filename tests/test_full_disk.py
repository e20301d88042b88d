"""#22 item 7: full disks and unwritable outputs. Results are checked before the work
and written whole or not at all; a full disk, /dev/full or a closed pipe is one
sentence, never a traceback, a truncated CSV or a 0-byte file beside older results."""

import errno
import subprocess
import sys

import numpy as np
import pytest

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core.outputs import OutputError, check_output_folder, output_folder
from olsdesk.core.runs import RunStore
from olsdesk.core.trainer import Trainer
from olsdesk.errors import RunError
from tests.helpers import write_png

CLI_TINY = ["--demo-per-class", "4", "--image-size", "32", "--batch-size", "16", "--device",
            "cpu"]


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "a.csv").write_text("old a")
    (out / "mine.txt").write_text("the user's")
    with pytest.raises(OutputError, match="the disk is full.*nothing in it was changed"):
        with output_folder(out) as staging:
            (staging / "a.csv").write_text("new a, half")
            _full()
    assert (out / "a.csv").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging left
    with output_folder(out) as staging:  # and a complete write replaces what it rewrites
        (staging / "a.csv").write_text("new a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.png").write_bytes(b"png")
    assert (out / "a.csv").read_text() == "new a" and (out / "sub" / "b.png").exists()
    assert (out / "mine.txt").read_text() == "the user's"


def test_a_file_written_empty_counts_as_a_failed_write(tmp_path):
    with pytest.raises(OutputError, match="figure.png was written empty"):
        with output_folder(tmp_path / "new") as staging:
            (staging / "figure.png").write_bytes(b"")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["file", "proc", "under-a-file"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_work(tmp_path, where):
    (tmp_path / "f").write_text("x")
    path = {"file": tmp_path / "f", "proc": "/proc/olsdesk-out",
            "under-a-file": tmp_path / "f" / "out"}[where]
    with pytest.raises(OutputError) as exc:
        check_output_folder(path)
    assert "\n" not in str(exc.value) and str(exc.value).endswith(".")


def test_evaluate_out_naming_a_file_exits_2_before_any_work(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "missing.pt" not in err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    trainer = Trainer(RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1,
                                device="cpu"), runs_dir=root / "runs")
    list(trainer.fit())
    return trainer.store.checkpoint_path("best.pt")


def test_evaluate_on_a_full_disk_keeps_the_older_results(checkpoint, tmp_path, capsys,
                                                         monkeypatch):
    import olsdesk.core.evaluation as evaluation

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--resamples", "20"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(evaluation, "_write_confusion", _full)  # the disk fills mid-way
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--resamples", "20"]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "nothing in it was changed" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _folder_of_pngs(folder, n):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_png(folder / f"img{i:03d}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
    return folder


def test_predict_into_a_closed_pipe_or_dev_full_is_quiet(checkpoint, tmp_path):
    images = _folder_of_pngs(tmp_path / "imgs", 80)
    command = [sys.executable, "-m", "olsdesk", "predict", "--checkpoint", str(checkpoint), str(images),
               "--device", "cpu"]
    pipe = subprocess.run(" ".join(f"'{c}'" for c in command) + " | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert pipe.stdout.count("\n") == 1 and "Traceback" not in pipe.stderr, pipe.stderr
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the output could not be written (the disk is full)" in done.stderr


def test_a_full_runs_folder_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    import olsdesk.core.runs as runs

    monkeypatch.setattr(runs, "atomic_write_bytes", _full)
    with pytest.raises(RunError, match="cannot create a run in .*the disk is full"):
        Trainer(RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1,
                          device="cpu"), runs_dir=tmp_path).prepare()
    assert list(tmp_path.iterdir()) == []


def test_logging_a_line_on_a_full_disk_does_not_stop_anything(tmp_path, monkeypatch, caplog):
    import olsdesk.core.runs as runs

    store = RunStore(tmp_path)
    real = runs.open_regular
    monkeypatch.setattr(runs, "open_regular", lambda path, *a, **k: _full() if str(
        path).endswith("log.txt") else real(path, *a, **k))
    store.log("skipped x.png: truncated")
    assert "log.txt" in caplog.text and "skipped x.png" in caplog.text


def test_predictions_csv_on_a_full_disk_keeps_the_older_file(tmp_path, monkeypatch):
    import olsdesk.core.outputs as outputs
    from olsdesk.core.predictor import write_predictions_csv

    path = tmp_path / "p.csv"
    path.write_text("older")
    monkeypatch.setattr(outputs, "atomic_write_bytes", _full)
    with pytest.raises(OutputError, match="p.csv could not be written .the disk is full."):
        write_predictions_csv([], path)
    assert path.read_text() == "older"


def test_a_study_report_on_a_full_disk_keeps_the_older_one(tmp_path):
    """compare wrote an empty results.csv after chained tracebacks."""
    from olsdesk.core.study import write_study_report

    (tmp_path / "results.csv").write_text("older results")
    (tmp_path / "runs").mkdir()  # the study's runs stay as they are

    def renderer(histories, out, test):
        (out / "curves.png").write_bytes(b"\x89PNG")
        _full()

    with pytest.raises(OutputError, match="the disk is full"):
        write_study_report([], RunConfig(), 1, tmp_path, renderer, line="demo",
                           histories={})
    assert (tmp_path / "results.csv").read_text() == "older results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "runs"]
    paths, _ = write_study_report([], RunConfig(), 1, tmp_path, None, line="demo",
                                  histories={})
    assert (tmp_path / "results.csv").read_text().startswith("loss")
