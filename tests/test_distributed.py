"""One run on two processes (torchrun, gloo, CPU): a valid run folder whose validation
counts every image once, a rank killed mid-epoch and resumed on two processes, and a
two-process checkpoint resumed in one process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from olsdesk.core.data.sources import open_dataset
from olsdesk.core.runs import RunLock, RunStore
from olsdesk.core.trainer import Trainer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun's gloo on Linux/macOS")

TINY = ["--data", "demo", "--device", "cpu", "--image-size", "32", "--batch-size", "16",
        "--workers", "0"]


def olsdesk(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "olsdesk", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out


def the_run(runs: Path) -> RunStore:
    (path,) = [p for p in runs.iterdir() if p.is_dir()]
    return RunStore(path)


def test_two_processes_train_one_run_and_validate_every_image_once(tmp_path):
    process = olsdesk("train", "--gpus", "2", *TINY, "--demo-per-class", "20", "--epochs", "2",
                      "--runs-dir", str(tmp_path))
    out = finish(process)
    assert process.returncode == 0, out
    assert out.count("epoch 2/2") == 1  # rank 0 speaks for both
    store = the_run(tmp_path)
    assert store.status == "finished"
    assert store.info().device.endswith("2 process(es) under torchrun")
    reports = store.load_reports()
    assert [r.epoch for r in reports] == [1, 2]
    val = open_dataset(store.config()).val
    for report in reports:
        assert report.reliability_counts.sum() == len(val) == 36
        assert len(np.unique(report.embedding_indices)) == len(report.embedding_indices) == 36
    # a two-process checkpoint continues in one process
    trainer = Trainer.from_run(store.path, epochs=3)
    assert [r.epoch for r in trainer.fit() if hasattr(r, "val_top1")] == [3]
    assert RunStore(store.path).status == "finished"


def test_a_rank_killed_mid_epoch_resumes_on_two_processes(tmp_path):
    process = olsdesk("train", "--gpus", "2", *TINY, "--demo-per-class", "120", "--epochs", "3",
                      "--runs-dir", str(tmp_path))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait for epoch 1's checkpoint, then kill rank 0
        runs = [p for p in tmp_path.iterdir() if p.is_dir()]
        if runs and (runs[0] / "checkpoints" / "latest.pt").exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 2
    store = the_run(tmp_path)
    pid = int(re.search(r"process (\d+)", RunLock.holder(store.path)).group(1))
    os.kill(pid, signal.SIGKILL)  # rank 0, which holds the run's lock
    out = finish(process)
    assert process.returncode != 0, out
    assert len(store.metrics()) < 3
    assert store.status == "interrupted"
    process = olsdesk("train", "--gpus", "2", "--resume", str(store.path))
    out = finish(process)
    assert process.returncode == 0, out
    assert "interrupted" in out
    assert [m["epoch"] for m in store.metrics()] == [1, 2, 3]
    assert store.status == "finished"


def test_the_gpu_check_says_plainly_that_it_needs_cuda_and_its_code_path_runs_on_cpu(
        tmp_path):
    import torch

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHON": sys.executable}
    check = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh")], env=env,
                           capture_output=True, text=True, timeout=120)
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: run bench/gpu_check.sh itself")
    assert check.returncode == 2 and "no CUDA GPU" in check.stderr
    dry = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--allow-cpu"],
                         env={**env, "OUT": str(tmp_path)}, capture_output=True, text=True,
                         timeout=600)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    for part in ("(a) smallcnn", "(b) OLS", "(f) 64 PNGs", "(g) ", "(h) smallcnn",
                 "(i) 20 of fit's steps", "(k) "):
        assert any(line.startswith(part) for line in lines), (part, dry.stdout)
    assert any(line.startswith("(g) compile on") for line in lines) or \
        "(g) skipped" in dry.stdout
    assert "aten::" in (tmp_path / "olsdesk-gpu-check" / "profile.txt").read_text()


def test_a_process_run_is_driven_like_a_trainer_and_stops_on_request(tmp_path):
    from olsdesk.config import RunConfig
    from olsdesk.core.launch import ProcessRun

    config = RunConfig(demo_per_class=20, image_size=32, batch_size=16, epochs=2,
                       device="cpu", num_workers=0)
    job = ProcessRun(config, 2, tmp_path, run_name="two")
    started = job.started()
    assert started.path == tmp_path / "two" and started.epochs == 2
    # a slow rank reads the settings long after rank 0 made the run: they stay until the end
    assert Path(job._config_file).exists()
    epochs = [r.epoch for r in job.fit()]
    assert epochs == [1, 2], "\n".join(job.output)
    assert not Path(job._config_file).exists()
    assert not job.stopped and RunStore(tmp_path / "two").status == "finished"

    job = ProcessRun(config.replace(epochs=50, demo_per_class=60), 2, tmp_path, run_name="stop")
    job.started()
    epochs = []
    for report in job.fit():
        epochs.append(report.epoch)
        job.request_stop()  # after the first epoch: every process stops after its batch
    assert job.stopped and epochs[0] == 1 and len(epochs) < 50
    store = RunStore(tmp_path / "stop")
    assert store.status == "stopped" and store.requested() == "run"
    from olsdesk.core.runs import load_checkpoint

    assert load_checkpoint(store.checkpoint_path()).epoch == len(epochs)
