"""olsdesk compare: every file with every column, and resuming an interrupted comparison."""

import csv

from olsdesk.cli import main
from olsdesk.core import study
from olsdesk.core.runs import RunStore

ARGS = ["compare", "--losses", "ce,ols", "--seeds", "1", "--epochs", "1", "--demo-per-class",
        "6", "--image-size", "32", "--device", "cpu"]


def test_tiny_comparison_writes_every_file_and_column(tmp_path, capsys):
    assert main([*ARGS, "--out", str(tmp_path), "--resamples", "100"]) == 0
    for name in ("report.md", "results.csv", "test_results.csv", "risk_coverage.csv",
                 "curves.png", "reliability.png", "ols_soft_labels.png", "embeddings.png",
                 "risk_coverage.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["loss"] for r in rows] == ["ce", "ols"]
    for key, _, _ in study.METRICS:
        for suffix in ("mean", "std", "best"):
            assert f"{key}_{suffix}" in rows[0]
    # every loss holding the best mean is marked (ties too), and none other
    top = max(float(r["val_top1_mean"]) for r in rows)
    assert [r["val_top1_best"] == "True" for r in rows] == [
        float(r["val_top1_mean"]) == top for r in rows]
    report = (tmp_path / "report.md").read_text()
    assert "ECE after T-scaling" in report and "online label smoothing" in report
    assert "![curves](curves.png)" in report
    assert "## On the test split" in report and "Difference to hard labels" in report
    for label in ("| smooth ECE |", "| mean set size |", "| set coverage |", "| AURC |"):
        assert label in report  # a row a metric
    curve = list(csv.DictReader(open(tmp_path / "risk_coverage.csv")))
    assert {r["loss"] for r in curve} == {"ce", "ols"}
    assert "On the test split, against hard labels" in capsys.readouterr().out


def test_test_comparison_is_each_best_checkpoint_on_the_test_images_paired_against_ce(tmp_path):
    """The pooled values and the paired differences, recomputed from each run's best
    checkpoint with scikit-learn on the same test images."""
    import numpy as np
    import pytest
    import relplot
    import torch
    from sklearn.metrics import accuracy_score

    from olsdesk.config import RunConfig
    from olsdesk.core.data.sources import open_dataset
    from olsdesk.core.predictor import Predictor

    base = RunConfig(epochs=1, demo_per_class=10, image_size=32, device="cpu")
    run = study.Study(base, ["ce", "ls"], 2, tmp_path)
    for _ in run.run():
        pass
    test = study.compare_on_test(run.stores, run.dataset, resamples=300)
    data = open_dataset(base)
    images = [data.test.load(i) for i in range(len(data.test))]

    y = np.asarray(data.test.labels)

    def scored(store):
        """Top-1, smooth ECE (relplot), AURC (by its definition) and the sets' coverage
        and mean size (the predictor's own sets, on the scaled probabilities)."""
        predictor = Predictor.from_checkpoint(store.checkpoint_path("best.pt"), device="cpu")
        with torch.no_grad():
            x = torch.stack([predictor.preprocessing(im, train=False) for im in images])
            logits = predictor.model(x).double()
        probs = logits.softmax(1).numpy()
        pred = probs.argmax(1)
        scaled = (logits / predictor.temperature).softmax(1).numpy()
        predictor.use_sets()
        sets = predictor.sets.sets(scaled)
        order = np.argsort(-probs.max(1), kind="stable")
        errors = (pred != y)[order]
        risk = np.cumsum(errors) / np.arange(1, len(y) + 1)
        return {"top1": accuracy_score(y, pred),
                "smooth_ece": relplot.smECE(probs.max(1), (pred == y) * 1.0),
                "aurc": risk.mean(),
                "set_coverage": sets[np.arange(len(y)), y].mean(),
                "mean_set_size": sets.sum(1).mean()}

    found = {loss: [scored(s) for s in run.stores if s.config().loss == loss]
             for loss in ("ce", "ls")}
    acc = {loss: np.mean([r["top1"] for r in rows]) for loss, rows in found.items()}
    assert test.n_images == len(data.test) == 24
    assert test.values["ce"]["top1"][0] == acc["ce"]
    assert test.values["ls"]["top1"][0] == acc["ls"]
    for loss, rows in found.items():
        for key, tolerance in (("smooth_ece", 2e-3), ("aurc", 0.02), ("set_coverage", 1e-9),
                               ("mean_set_size", 1e-9)):
            # AURC: the stable sort breaks ties one way, olsdesk spreads tied errors evenly
            expected = np.mean([r[key] for r in rows])
            assert test.values[loss][key][0] == pytest.approx(expected, abs=tolerance), key
        value, lo, hi = test.values[loss]["smooth_ece"]
        assert lo <= value <= hi  # a calibration error's interval is centred on it
        coverage, risk = test.curves[loss]
        assert coverage[-1] == 1.0 and risk[-1] == pytest.approx(1 - acc[loss])
    assert test.sets == "RAPS at 90%"
    # what the app reads of a study folder: the same numbers, to the files' 6 decimals
    study.write_test_csv(test, tmp_path / "test_results.csv")
    study.write_risk_coverage_csv(test, tmp_path / "risk_coverage.csv")
    again = study.read_test_comparison(tmp_path)
    assert again.n_images == 24 and list(again.curves) == list(test.curves)
    for loss, metrics in test.values.items():
        np.testing.assert_allclose(again.values[loss]["aurc"], metrics["aurc"], atol=1e-6)
        np.testing.assert_allclose(again.curves[loss][1], test.curves[loss][1], atol=1e-6)
    np.testing.assert_allclose(again.differences["ls"]["top1"], test.differences["ls"]["top1"],
                               atol=1e-6)
    checkpoint = run.stores[0].checkpoint_path("best.pt")
    assert study.study_folder_of(checkpoint) == tmp_path
    assert study.study_folder_of(tmp_path / "best.pt") is None
    (tmp_path / "risk_coverage.csv").write_text("not,a\nstudy,file\n")
    assert study.read_test_comparison(tmp_path) is None
    value, lo, hi = test.differences["ls"]["top1"]
    assert value == acc["ls"] - acc["ce"] and lo <= hi
    assert test.significant("ls", "top1") == (lo > 0 or hi < 0)
    assert "ce" not in test.differences


def test_the_reading_of_a_test_comparison_follows_the_intervals():
    values = {loss: {key: (0.5, 0.4, 0.6) for key, _, _ in study.TEST_METRICS}
              for loss in ("ce", "ols", "ls")}
    diffs = {loss: {key: (0.0, -0.01, 0.01) for key, _, _ in study.TEST_METRICS}
             for loss in ("ols", "ls")}
    diffs["ols"]["top1"] = (0.03, 0.01, 0.05)  # higher is better: better
    diffs["ols"]["ece"] = (0.02, 0.005, 0.04)  # lower is better: worse
    comparison = study.TestComparison("held out", 100, 1000, values, diffs)
    reading = {line.split(":")[0]: line for line in comparison.reading()}
    assert reading["Top-1"].startswith("Top-1: better than hard labels: online label "
                                       "smoothing +0.0300 (+0.0100 to +0.0500)")
    assert "worse: online label smoothing +0.0200" in reading["ECE"]
    assert "no difference the test set can show: label smoothing" in reading["Top-1"]


def test_ties_are_all_best_and_one_seed_is_never_called_within_the_spread():
    from olsdesk.core.study import LossSummary, StudySummary, tied_best

    assert tied_best([0.9, 1.0, 1.0, float("nan")], higher=True) == {1, 2}
    assert tied_best([0.2, 0.1, 0.1], higher=False) == {1, 2}
    assert tied_best([float("nan")], higher=True) == set()
    keys = [key for key, _, _ in study.METRICS]

    def row(loss, top1, runs, sd=0.0):
        mean = {k: 0.5 for k in keys} | {"val_top1": top1}
        return LossSummary(loss, runs, mean, {k: sd for k in keys})

    tie = study.StudySummary([row("ce", 1.0, 1), row("ls", 0.9, 1), row("ols", 1.0, 1)],
                             {"val_top1": "ce"})
    assert [tie.is_best("val_top1", loss) for loss in ("ce", "ls", "ols")] == [True, False, True]
    one_seed = StudySummary([row("ce", 0.8, 1), row("ols", 0.9, 1)], {"val_top1": "ols"})
    (line,) = one_seed.reading()
    assert "within the spread" not in line and "one run each" in line
    seeds = StudySummary([row("ce", 0.8, 3, 0.01), row("ols", 0.9, 3, 0.01)],
                         {"val_top1": "ols"})
    assert "more than twice" in seeds.reading()[0]


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


def test_a_stop_asked_while_the_next_run_is_set_up_is_not_lost(tmp_path, monkeypatch):
    """The study hands its control to every trainer it makes: a stop that arrives between
    two runs (here: while the second trainer is built) ends the study there."""
    from olsdesk.config import RunConfig
    from olsdesk.core import trainer as trainer_module

    base = RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1, device="cpu")
    comparison = study.Study(base, ["ce", "ols"], 1, tmp_path)
    built = []
    original = trainer_module.Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)
        assert self.control is comparison.control  # one control for the whole study
        if len(built) == 2:
            comparison.request_stop()  # the user presses Stop just now

    monkeypatch.setattr(trainer_module.Trainer, "__init__", init)
    steps = list(comparison.run())
    assert len(built) == 2 and comparison.stopped
    assert [s.name for s in steps if s.item == "finished earlier"] == []
    assert {s.name for s in steps} == {comparison.runs[0][0]}  # the second never started
    assert len(comparison.stores) == 1


def test_the_papers_table_models_by_losses_by_alpha_in_one_command(tmp_path, capsys):
    """Two models x (hard labels, OLS at two α, LS at two ε, focal loss, MbLS) x 1 seed: a
    study a model with its full report, and one table over them paired within each model."""
    args = ["compare", "--models", "smallcnn,mobilenet_v2", "--losses", "ce,ols,ls,focal,mbls",
            "--alphas", "0.3,0.7", "--epsilons", "0.05,0.2", "--seeds", "1", "--epochs", "1",
            "--demo-per-class", "6", "--image-size", "32", "--device", "cpu",
            "--resamples", "50", "--out", str(tmp_path)]
    assert main(args) == 0
    arms = ["ce", "ols-a0.3", "ols-a0.7", "ls-e0.05", "ls-e0.2", "focal", "mbls"]
    for model in ("smallcnn", "mobilenet_v2"):
        folder = tmp_path / model
        assert sorted(p.name for p in (folder / "runs").iterdir()
                      if not p.name.startswith(".")) == sorted(f"{a}-s0" for a in arms)
        config = RunStore(folder / "runs" / "ols-a0.3-s0").config()
        assert (config.model, config.loss, config.alpha) == (model, "ols", 0.3)
        assert RunStore(folder / "runs" / "ls-e0.2-s0").config().epsilon == 0.2
        rows = list(csv.DictReader(open(folder / "results.csv")))
        assert [r["loss"] for r in rows] == arms
        assert "online label smoothing α=0.3" in (folder / "report.md").read_text()
    table = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["model"], r["loss"]) for r in table] == [
        (m, a) for m in ("smallcnn", "mobilenet_v2") for a in arms]
    tests = list(csv.DictReader(open(tmp_path / "test_results.csv")))
    # each model's differences are to its own hard labels: none for CE itself
    assert {r["minus_ce"] for r in tests if r["loss"] == "ce"} == {""}
    assert all(r["minus_ce"] for r in tests if r["loss"] != "ce")
    report = (tmp_path / "report.md").read_text()
    assert "| mobilenet_v2 | margin-based LS |" in report
    assert "[smallcnn](smallcnn/report.md)" in report
    # run again: everything is finished, nothing trains
    assert main(args) == 0
    assert "starting" not in capsys.readouterr().out.split("model 1/2")[-1]


def test_compare_refuses_an_axis_without_its_loss(capsys):
    assert main(["compare", "--losses", "ce,ols", "--epsilons", "0.1", "--out", "x"]) == 2
    assert "does not name ls" in capsys.readouterr().err
    assert main(["compare", "--models", "resnet50,alexnet", "--out", "x"]) == 2
    assert "unknown model 'alexnet'" in capsys.readouterr().err
    assert main(["compare", "--losses", "ols", "--alphas", "0.5,2", "--out", "x"]) == 2
    assert "alpha must be between 0 and 1" in capsys.readouterr().err


def test_the_imbalance_remedies_are_a_study_axis(tmp_path):
    args = ["compare", "--losses", "ce,ols", "--imbalance", "none,balanced,weighted",
            "--seeds", "1", "--epochs", "1", "--demo-per-class", "6", "--image-size", "32",
            "--device", "cpu", "--resamples", "30", "--out", str(tmp_path)]
    assert main(args) == 0
    rows = [r["loss"] for r in csv.DictReader(open(tmp_path / "results.csv"))]
    assert rows == ["ce", "ce-balanced", "ce-weighted", "ols", "ols-balanced", "ols-weighted"]
    config = RunStore(tmp_path / "runs" / "ols-balanced-s0").config()
    assert (config.sampling, config.class_weights) == ("balanced", False)
    assert RunStore(tmp_path / "runs" / "ce-weighted-s0").config().class_weights
    assert study.arm_label("ols-a0.3-weighted") == "online label smoothing α=0.3, class weights"
    assert main([*args[:4], "oversample", *args[5:]]) == 2


def test_a_rerun_with_other_settings_or_other_data_is_refused_not_reused(tmp_path, capsys):
    """#22 item 2: the same --out with another model, lr or data used to reuse the finished
    runs and publish their numbers under the new settings' name."""
    from tests.helpers import make_class_folder

    assert main([*ARGS, "--losses", "ce", "--out", str(tmp_path), "--resamples", "30"]) == 0
    before = (tmp_path / "results.csv").read_text()
    capsys.readouterr()
    assert main([*ARGS, "--losses", "ce", "--lr", "0.5", "--model", "resnet18",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds runs of another experiment" in err
    assert "model 'smallcnn' (now 'resnet18')" in err and "lr 0.003 (now 0.5)" in err
    other = make_class_folder(tmp_path.parent / "other", {"x": 6, "y": 6, "z": 6})
    assert main([*ARGS, "--losses", "ce", "--data", str(other), "--out", str(tmp_path)]) == 2
    assert "data 'demo'" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_text() == before  # nothing overwritten
    # more epochs is a continuation, not another experiment
    assert main([*ARGS, "--losses", "ce", "--epochs", "2", "--out", str(tmp_path),
                 "--resamples", "30"]) == 0
    assert "ce-s0: resuming after epoch 1" in capsys.readouterr().out
