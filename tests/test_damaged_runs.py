"""#22 item 6: a damaged run file is one sentence, never a traceback, wherever it is read:
``train --resume``, ``train --config``, the app's File → Open run, the listing."""

import errno
import json
import shutil

import numpy as np
import pytest

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core.runs import RunFollower, RunStore
from olsdesk.core.trainer import Trainer
from olsdesk.errors import RunError

TINY = dict(demo_per_class=4, image_size=32, batch_size=16, device="cpu", epochs=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    trainer = Trainer(RunConfig(**TINY), runs_dir=root / "runs", run_name="base")
    list(trainer.fit())
    other = Trainer(RunConfig(**{**TINY, "model": "resnet18", "epochs": 1}),
                    runs_dir=root / "runs", run_name="other-model")
    list(other.fit())
    return trainer.store.path


def _edit_config(**changes):
    def edit(run):
        stored = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**stored, **changes}))
    return edit


def _write(name, content):
    def edit(run):
        target = run / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return edit


def _append(name, content):
    def edit(run):
        with open(run / name, "ab") as fh:
            fh.write(content)
    return edit


def _other_models_checkpoint(run):
    shutil.copy(run.parent / "other-model" / "checkpoints" / "latest.pt",
                run / "checkpoints" / "latest.pt")


def _wrong_shape_epoch(run):
    with np.load(run / "epochs" / "0002.npz") as stored:
        arrays = dict(stored)
    arrays["embedding"] = arrays["embedding"][:, :1]  # the Embedding panel indexed column 1
    np.savez(run / "epochs" / "0002.npz", **arrays)


DAMAGE = {  # case: (damage, what the sentence says)
    "config-garbage": (_write("config.json", "{garbage"), "config.json cannot be used: it is "
                                                          "not valid JSON"),
    "config-list": (_write("config.json", "[]"), "config.json cannot be used: the run "
                                                 "configuration is not a JSON object"),
    "config-string-numbers": (_edit_config(epochs="3", lr="0.1"),
                              "config.json cannot be used: epochs must be a whole number, "
                              "not '3'"),
    "metrics-empty-object": (_append("metrics.jsonl", b"{}\n"),
                             "line 3 of config-like/metrics.jsonl is not an epoch's record"),
    "metrics-list": (_append("metrics.jsonl", b"[1, 2]\n"), "line 3 of"),
    "metrics-not-utf8": (_append("metrics.jsonl", b"\xff\xfe\n"), "line 3 of"),
    "another-models-checkpoint": (_other_models_checkpoint,
                                  "checkpoints/latest.pt holds weights of another model"),
}


def _damaged(base, name, damage):
    run = base.parent / name
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run, ignore=shutil.ignore_patterns(".lock"))
    damage(run)
    return run


@pytest.mark.parametrize("name", DAMAGE)
def test_resume_on_a_damaged_run_is_one_sentence(base, name, capsys):
    damage, says = DAMAGE[name]
    run = _damaged(base, name, damage)
    before = {f: (run / f).read_bytes() for f in ("config.json", "metrics.jsonl")}
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert says.replace("config-like", name) in err, err
    assert {f: (run / f).read_bytes() for f in before} == before  # nothing rewritten or lost
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["0001.npz", "0002.npz"]


def test_a_stray_file_among_the_epochs_is_left_alone_and_the_run_resumes(base, capsys):
    run = _damaged(base, "stray-npz", _write("epochs/foo.npz", "not mine"))
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert (run / "epochs" / "foo.npz").read_text() == "not mine"
    assert len(RunStore(run).metrics()) == 3


@pytest.mark.parametrize("content", [b"junk", b"PK\x03\x04junk"])
def test_a_garbage_epoch_file_is_a_sentence_without_numpys_advice(base, content):
    run = _damaged(base, f"garbage-npz-{len(content)}", _write("epochs/0002.npz", content))
    with pytest.raises(RunError) as exc:
        RunFollower(RunStore(run)).read()
    message = str(exc.value)
    assert "epochs/0002.npz cannot be used" in message and "pickle" not in message


def test_an_epoch_file_of_the_wrong_shape_is_refused_when_read(base):
    run = _damaged(base, "wrong-shape", _wrong_shape_epoch)
    with pytest.raises(RunError, match="0002.npz cannot be used .*embedding"):
        RunFollower(RunStore(run)).read()


def test_a_read_only_run_folder_is_one_sentence(base, monkeypatch, capsys):
    """EROFS on the lock file (the tests run as root, so the file system is simulated)."""
    import olsdesk.core.runs as runs

    run = _damaged(base, "read-only", lambda run: None)
    real_open = runs.open_regular

    def read_only(path, mode="r", *args, **kwargs):
        if str(path).startswith(str(run)) and any(c in mode for c in "wa+x"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runs, "open_regular", read_only)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "read-only cannot be written (Read-only file system)" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_config_file_that_is_not_an_object_is_one_sentence(tmp_path, capsys):
    (tmp_path / "c.json").write_text("[]")
    assert main(["train", "--config", str(tmp_path / "c.json"), "--runs-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not an olsdesk config.json" in err and "Traceback" not in err


def _within(seconds, call):
    """call()'s result or exception, or a failure if it is still blocked after seconds
    (a daemon thread: a call stuck on a FIFO cannot hold the test run open)."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked on a pipe"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("name,read", [
    ("metrics.jsonl", lambda store: store.metrics()),
    ("config.json", lambda store: store.config()),
    ("run.json", lambda store: store.info()),
    (".lock", lambda store: store.lock()),
])
def test_a_pipe_in_place_of_a_run_file_is_a_sentence_not_a_hang(base, name, read):
    """open() on a FIFO waits for the other end forever: the CLI and the app hung."""
    import os

    run = _damaged(base, f"fifo-{name.strip('.')}", lambda run: None)
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    with pytest.raises(RunError, match="not a regular file"):
        _within(10, lambda: read(RunStore(run)))


def test_a_pipe_as_train_config_is_a_sentence_not_a_hang(tmp_path, capsys):
    import os

    os.mkfifo(tmp_path / "c.json")
    assert _within(10, lambda: main(["train", "--config", str(tmp_path / "c.json"),
                                     "--runs-dir", str(tmp_path / "runs")])) == 2
    assert "c.json cannot be read (not a regular file" in capsys.readouterr().err
