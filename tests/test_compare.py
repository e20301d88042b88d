"""olsdesk compare: every file with every column, and resuming an interrupted comparison."""

import csv

from olsdesk.cli import main
from olsdesk.core import study
from olsdesk.core.runs import RunStore

ARGS = ["compare", "--losses", "ce,ols", "--seeds", "1", "--epochs", "1", "--demo-per-class",
        "6", "--image-size", "32", "--device", "cpu"]


def test_tiny_comparison_writes_every_file_and_column(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path)]) == 0
    for name in ("report.md", "results.csv", "curves.png", "reliability.png",
                 "ols_soft_labels.png", "embeddings.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["loss"] for r in rows] == ["ce", "ols"]
    for key, _, _ in study.METRICS:
        for suffix in ("mean", "std", "best"):
            assert f"{key}_{suffix}" in rows[0]
    assert sum(r["val_top1_best"] == "True" for r in rows) == 1
    report = (tmp_path / "report.md").read_text()
    assert "ECE after T-scaling" in report and "online label smoothing" in report
    assert "![curves](curves.png)" in report


def test_interrupted_comparison_resumes_instead_of_starting_over(tmp_path, capsys):
    # a finished first run, and a second interrupted after its first of two epochs
    assert main([*ARGS, "--losses", "ce", "--epochs", "2", "--out", str(tmp_path)]) == 0
    ce_run = tmp_path / "runs" / "ce-s0"
    first_checkpoint = (ce_run / "checkpoints" / "latest.pt").stat().st_mtime_ns
    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer

    cfg = RunConfig(loss="ols", epochs=2, demo_per_class=6, image_size=32, device="cpu")
    trainer = Trainer(cfg, runs_dir=tmp_path / "runs", run_name="ols-s0")
    fit = trainer.fit()
    for item in fit:
        if getattr(item, "epoch", 0) == 1 and hasattr(item, "val_top1"):
            break
    fit.close()
    assert study.run_state(tmp_path / "runs" / "ols-s0", 2) == "resumable"
    capsys.readouterr()
    assert main([*ARGS, "--losses", "ce,ols", "--epochs", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ce-s0: finished earlier" in out
    assert "ols-s0 epoch 2/2" in out and "ols-s0 epoch 1/2" not in out
    assert (ce_run / "checkpoints" / "latest.pt").stat().st_mtime_ns == first_checkpoint
    assert [r.epoch for r in RunStore.load(tmp_path / "runs" / "ols-s0")] == [1, 2]
