"""Evaluation on the test split: every data layout, and every number in its files checked
against scikit-learn and the metric module computed afresh from its own predictions.csv."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter

import calibration as kumar  # uncertainty-calibration (Kumar et al.), test-only
import numpy as np
import pytest
import relplot  # Blasiok & Nakkiran's smooth ECE, test-only
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core import metrics
from olsdesk.core.bootstrap import CALIBRATION_ERRORS
from olsdesk.core.evaluation import evaluate, write_evaluation
from olsdesk.core.trainer import Trainer
from olsdesk.errors import DataError
from tests.helpers import make_class_folder, truncate, write_png

TINY = dict(image_size=32, batch_size=16, epochs=1, device="cpu", num_workers=0)


def _train(config: RunConfig, runs) -> Trainer:
    trainer = Trainer(config, runs_dir=runs)
    for _ in trainer.fit():
        pass
    return trainer


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return _train(RunConfig(demo_per_class=12, **TINY), tmp_path_factory.mktemp("runs"))


def _read_predictions(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0])
    classes = [h[2:] for h in header if h.startswith("p_")]
    good = [r for r in rows if not r["error"]]
    p = np.array([[float(r[f"p_{c}"]) for c in classes] for r in good])
    q = np.array([[float(r[f"q_{c}"]) for c in classes] for r in good])
    y = np.array([classes.index(r["label"]) for r in good])
    return rows, classes, p, q, y


def test_demo_run_evaluation_files_match_an_independent_computation(demo_run, tmp_path):
    ev = evaluate(demo_run.store.checkpoint_path("best.pt"), device="cpu", resamples=200)
    paths = write_evaluation(ev, tmp_path)
    assert {p.name for p in paths} >= {"predictions.csv", "metrics.json", "per_class.csv",
                                       "confusion_matrix.csv", "reliability.csv"}
    test = demo_run.dataset.test
    assert len(test) == 12 * 2  # 15 % of 12 images, rounded to 2, for each of 12 classes
    rows, classes, p, q, y = _read_predictions(tmp_path / "predictions.csv")
    assert classes == list(demo_run.dataset.class_names)
    assert [r["path"] for r in rows] == [test.describe(i) for i in range(len(test))]
    assert not {r["path"] for r in rows} & {demo_run.dataset.val.describe(i)
                                            for i in range(len(demo_run.dataset.val))}
    assert all(r["prediction"] == classes[int(np.argmax(pi))] for r, pi in zip(rows, p, strict=True))
    np.testing.assert_allclose(q, metrics_scaled(p, ev.temperature), atol=1e-6)

    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["n_images"] == 24 and report["n_unreadable"] == 0
    assert report["bootstrap_resamples"] == 200 and report["split"] == "test"
    assert report["temperature"] == pytest.approx(demo_run.temperature)
    for block, probs in (("raw", p), ("temperature_scaled", q)):
        got = report[block]
        aurocs = [roc_auc_score(y == c, probs[:, c]) for c in range(12)]
        expected = {
            "top1": metrics.topk_accuracy(probs, y, 1), "top5": metrics.topk_accuracy(probs, y, 5),
            "nll": metrics.negative_log_likelihood(probs, y), "brier": metrics.brier_score(probs, y),
            "ece": metrics.expected_calibration_error(probs, y),
            "mce": metrics.maximum_calibration_error(probs, y),
            "adaptive_ece": metrics.adaptive_calibration_error(probs, y),
            "classwise_ece": metrics.classwise_calibration_error(probs, y),
            # independent references: Blasiok & Nakkiran's relplot (its bandwidth search
            # stops at 2^-10, hence the looser check below) and Kumar et al.'s package
            "smooth_ece": relplot.smECE(probs.max(1), (probs.argmax(1) == y) * 1.0),
            "l2_ce_debiased": kumar.lower_bound_scaling_top_ce(probs, y, p=2, debias=True,
                                                              num_bins=15),
            "macro_auroc": float(np.mean(aurocs)),
            "balanced_accuracy": float(np.mean(
                [(probs[y == c].argmax(1) == c).mean() for c in range(12)])),
        }
        risk = naive_risk_coverage(probs.max(1), probs.argmax(1) == y)
        best = naive_risk_coverage((probs.argmax(1) == y) * 1.0, probs.argmax(1) == y)
        expected["aurc"] = float(risk.mean())
        expected["eaurc"] = float(risk.mean() - best.mean())
        for name, value in expected.items():
            tolerance = 2e-3 if name == "smooth_ece" else 2e-6
            assert got[name]["value"] == pytest.approx(value, abs=tolerance), (block, name)
            lo, hi = got[name]["ci95"]
            assert lo <= hi
            if name in CALIBRATION_ERRORS:  # centred on the value, never above it
                assert lo <= got[name]["value"] <= hi, (block, name)

    # selective prediction: every score's curve, accuracies and referral rates
    selective = report["selective"]
    correct = p.argmax(1) == y
    entropy = -(p * np.log(np.clip(p, 1e-300, 1))).sum(1)
    for name, score in (("raw", p.max(1)), ("temperature_scaled", q.max(1)),
                        ("negative_entropy", -entropy)):
        risk = naive_risk_coverage(score, correct)
        assert selective[name]["aurc"] == pytest.approx(risk.mean(), abs=1e-5), name
        for coverage, accuracy in selective[name]["accuracy_at_coverage"].items():
            k = max(int(round(float(coverage) * 24)), 1)
            assert accuracy == pytest.approx(1 - risk[k - 1], abs=1e-5), (name, coverage)
        for target, referral in selective[name]["referral_for_accuracy"].items():
            reach = np.flatnonzero(1 - risk >= float(target) - 1e-9)
            assert referral == (None if not reach.size else
                                pytest.approx(1 - (reach[-1] + 1) / 24)), (name, target)
    assert "max_logit" in selective
    with open(tmp_path / "risk_coverage.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [int(r["images_answered"]) for r in curve] == list(range(1, 25))
    np.testing.assert_allclose([float(r["risk_raw"]) for r in curve],
                               naive_risk_coverage(p.max(1), correct), atol=1e-5)

    with open(tmp_path / "per_class.csv", newline="") as fh:
        per_class = list(csv.DictReader(fh))
    cm = confusion_matrix(y, p.argmax(1), labels=range(12))
    for c, row in enumerate(per_class):
        assert row["class"] == classes[c] and int(row["support"]) == cm[c].sum()
        tp = cm[c, c]
        assert float(row["sensitivity"]) == pytest.approx(tp / cm[c].sum(), abs=1e-6)
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + tp
        assert float(row["specificity"]) == pytest.approx(tn / (cm.sum() - cm[c].sum()),
                                                          abs=1e-6)
        assert float(row["auroc"]) == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-6)
        assert float(row["average_precision"]) == pytest.approx(
            average_precision_score(y == c, p[:, c]), abs=1e-6)
        assert float(row["auroc_ci_low"]) <= float(row["auroc_ci_high"])

    with open(tmp_path / "confusion_matrix.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][1:] == classes
    assert np.array_equal(np.array([[int(x) for x in r[1:]] for r in table[1:]]), cm)

    # every error pair once, most images first, from the predictions themselves
    with open(tmp_path / "top_confusions.csv", newline="") as fh:
        confused = list(csv.DictReader(fh))
    pairs = Counter((classes[t], classes[int(np.argmax(pi))]) for t, pi in zip(y, p, strict=True)
                    if int(np.argmax(pi)) != t)
    assert pairs and {(r["true"], r["predicted"]): int(r["count"]) for r in confused} == dict(pairs)
    assert [int(r["rank"]) for r in confused] == list(range(1, len(pairs) + 1))
    assert [int(r["count"]) for r in confused] == sorted(pairs.values(), reverse=True)
    for r in confused:
        true = classes.index(r["true"])
        assert float(r["share_of_true_class"]) == pytest.approx(
            int(r["count"]) / np.sum(y == true), abs=1e-6)
        assert float(r["share_of_errors"]) == pytest.approx(
            int(r["count"]) / sum(pairs.values()), abs=1e-6)

    with open(tmp_path / "reliability.csv", newline="") as fh:
        bins = list(csv.DictReader(fh))
    expected_bins = metrics.reliability_bins(p, y)
    assert [int(b["count"]) for b in bins] == expected_bins.counts.tolist()


def naive_risk_coverage(score, correct):
    """The error rate among the k most confident images, k = 1..N, images whose scores
    tie taken in every order alike: written afresh from the definition, one k at a time."""
    score = np.round(np.asarray(score, dtype=float), 6)  # as predictions.csv holds them
    error = 1.0 - np.asarray(correct, dtype=float)
    ranked = np.sort(score)[::-1]
    risks = []
    for k in range(1, len(score) + 1):
        t = ranked[k - 1]
        above = score > t
        tied = score == t
        expected = error[above].sum() + (k - above.sum()) * error[tied].mean()
        risks.append(expected / k)
    return np.array(risks)


def metrics_scaled(p, temperature):
    z = np.log(p) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def test_folder_run_evaluates_its_held_out_split_and_lists_unreadable_files(tmp_path):
    root = make_class_folder(tmp_path / "data", {"a": 14, "b": 14})
    trainer = _train(RunConfig(data=str(root), **TINY), tmp_path / "runs")
    test = trainer.dataset.test
    assert len(test) == 4
    victim = test.paths[0]
    truncate(write_png(tmp_path / "x.png", np.zeros((24, 24), np.uint8)))
    shutil.copy(tmp_path / "x.png", victim)  # a test file damaged after training
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(trainer.store.checkpoint_path("best.pt")),
                 "--out", str(out), "--resamples", "50", "--device", "cpu"]) == 0
    rows, *_ = _read_predictions(out / "predictions.csv")
    broken = [r for r in rows if r["error"]]
    assert [r["path"] for r in broken] == [victim]
    assert broken[0]["error"].startswith("img000.png is not an image")
    report = json.loads((out / "metrics.json").read_text())
    assert (report["n_images"], report["n_unreadable"]) == (3, 1)


def test_a_folder_run_evaluates_its_recorded_test_files_without_walking_the_folder(
        tmp_path, monkeypatch):
    from olsdesk.core.data import sources

    root = make_class_folder(tmp_path / "data", {"CT/lung/normal": 14, "MR/knee/tear": 14})
    trainer = _train(RunConfig(data=str(root), **TINY), tmp_path / "runs")
    test = [str(p) for p in trainer.dataset.test.paths]
    labels = trainer.dataset.test.labels.tolist()
    best = trainer.store.checkpoint_path("best.pt")
    walked = []
    monkeypatch.setattr(sources, "scan_folder", lambda root: walked.append(root) or 1 / 0)
    # files added since the run started join no split of it: nothing walks the folder
    for i in range(3):
        write_png(root / "CT/lung/normal" / f"late{i}.png", np.zeros((24, 24), np.uint8))
    ev = evaluate(best, device="cpu", resamples=20)
    assert not walked
    assert ev.names == test and ev.labels.tolist() == labels
    assert ev.source == "held out from the data" and not ev.warnings
    # a test file deleted since: left out, and said
    os.unlink(test[0])
    ev = evaluate(best, device="cpu", resamples=20)
    assert ev.names == test[1:] and not walked
    assert ev.warnings == [f"1 of the run's {len(test)} test files are gone since it recorded "
                           "its split: they are left out."]
    # --data elsewhere opens (walks) that folder, as before
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    monkeypatch.undo()
    ev = evaluate(best, data=str(moved), device="cpu", resamples=20)
    assert all(n.startswith(str(moved.resolve())) for n in ev.names)


def test_medmnist_archive_evaluates_on_its_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "organ.npz"
    np.savez(path, train_images=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
             train_labels=(np.arange(40) % 4).reshape(40, 1),
             val_images=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
             val_labels=(np.arange(8) % 4).reshape(8, 1),
             test_images=rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
             test_labels=(np.arange(12) % 4).reshape(12, 1))
    trainer = _train(RunConfig(data=str(path), **TINY), tmp_path / "runs")
    ev = evaluate(trainer.store.checkpoint_path("best.pt"), device="cpu", resamples=50)
    assert len(ev.labels) == 12 and ev.names[0] == "organ.npz:test #0"
    assert ev.source == "the archive's test arrays"


def test_radimagenet_layout_with_three_csvs(tmp_path):
    root = make_class_folder(tmp_path / "radiology_ai", {"CT/lung/normal": 8, "MR/knee/tear": 8})
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    splits = tmp_path / "splits"
    splits.mkdir()
    parts = {"train": files[:5] + files[8:13], "val": files[5:7] + files[13:15],
             "test": files[7:8] + files[15:16]}
    for split, rows in parts.items():
        lines = ["filename,label"] + [f"radiology_ai/{f},{f.rsplit('/', 1)[0]}" for f in rows]
        (splits / f"RadiologyAI_{split}.csv").write_text("\n".join(lines) + "\n")
    trainer = _train(RunConfig(data=str(root), split_csv=str(splits), **TINY), tmp_path / "r")
    ev = evaluate(trainer.store.checkpoint_path("best.pt"), device="cpu", resamples=50)
    assert sorted(ev.names) == sorted(str(root / f) for f in parts["test"])
    assert ev.source == "RadiologyAI_test.csv"


def test_external_test_folder_and_its_mistakes(demo_run, tmp_path, capsys):
    from olsdesk.core.data.demo import make_demo

    demo = make_demo(3, seed=9)
    ext = tmp_path / "hospital2"
    for i, (image, label) in enumerate(zip(demo.images, demo.labels, strict=True)):
        write_png(ext / demo.class_names[label] / f"{i}.png", image)
    checkpoint = str(demo_run.store.checkpoint_path("best.pt"))
    ev = evaluate(checkpoint, test_data=str(ext), device="cpu", resamples=50)
    assert len(ev.labels) == 36 and "hospital2" in ev.source
    write_png(ext / "XR" / "chest" / "0.png", demo.images[0])
    assert main(["evaluate", "--checkpoint", checkpoint, "--test-data", str(ext),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not trained on: XR/chest" in capsys.readouterr().err


def test_a_run_without_a_test_split_says_so(tmp_path):
    trainer = _train(RunConfig(demo_per_class=8, test_fraction=0.0, **TINY), tmp_path)
    with pytest.raises(DataError, match="no test split"):
        evaluate(trainer.store.checkpoint_path("best.pt"), device="cpu")


def test_the_run_records_the_test_split_beside_a_small_run_json(demo_run):
    """The names live in split.json.gz: run.json stays small at any dataset size (a
    RadImageNet run's was 29 MB, rewritten at every status change)."""
    import json

    from olsdesk.core.runs import SPLIT

    assert demo_run.store.info().test_names == ()  # run.json alone: no names
    on_disk = json.loads((demo_run.store.path / "run.json").read_text())
    assert "test_names" not in on_disk and "validation_names" not in on_disk
    assert (demo_run.store.path / SPLIT).is_file()
    info = demo_run.store.info(names=True)
    assert info.dataset.test_images == 24 and len(info.test_names) == 24
    assert info.dataset.test_source == "held out from the data"
    assert set(info.test_names).isdisjoint(info.validation_names)


def test_rows_select_a_cell_a_class_or_a_bin_most_confident_first(demo_run, tmp_path):
    ev = evaluate(demo_run.store.checkpoint_path("best.pt"), device="cpu", resamples=20)
    write_evaluation(ev, tmp_path)
    csv_rows, classes, p, q, y = _read_predictions(tmp_path / "predictions.csv")
    predicted = p.argmax(axis=1)
    for true in range(len(classes)):
        for pred in range(len(classes)):
            expected = [i for i in range(len(y)) if y[i] == true and predicted[i] == pred]
            got = ev.rows(true, pred)
            assert sorted(got.tolist()) == expected
            assert np.all(np.diff(p[got].max(axis=1)) <= 1e-6)  # most confident first
    mistakes = ev.rows(true=3)
    assert sorted(mistakes.tolist()) == np.flatnonzero(y == 3).tolist()
    least = ev.rows(true=3, most_confident_first=False)
    assert sorted(least.tolist()) == sorted(mistakes.tolist())
    assert np.all(np.diff(p[least].max(axis=1)) >= -1e-6)
    wrong = ev.rows(true=3, wrong=True)
    assert sorted(wrong.tolist()) == np.flatnonzero((y == 3) & (predicted != 3)).tolist()
    top = q.max(axis=1)  # a reliability bin, on the scaled probabilities: (lower, upper]
    n = ev.n_bins
    in_bin = [ev.rows(confidence_bin=b, scaled=True) for b in range(n)]
    for b in range(n):
        expected = np.flatnonzero((top > b / n) & (top <= (b + 1) / n) | (b == 0) & (top == 0))
        assert sorted(in_bin[b].tolist()) == expected.tolist()
    assert sum(len(r) for r in in_bin) == len(y)
    # each row leads back to its image
    for row in ev.rows(true=0):
        assert ev.samples.describe(int(ev.sample_index[row])) == csv_rows[row]["path"]


def test_prediction_sets_are_calibrated_on_validation_and_match_a_hand_computation(
        demo_run, tmp_path):
    """LAC at 80 %: the threshold is the ceil((n+1)0.8)-th smallest 1 - q(true class) of
    the validation images (computed here from their own predictions), a test image's set
    every class with q >= 1 - threshold; coverage and size are read back from the files."""
    best = demo_run.store.checkpoint_path("best.pt")
    ev = evaluate(best, device="cpu", resamples=200, conformal="lac", coverage=0.8)
    write_evaluation(ev, tmp_path)
    val = evaluate(best, device="cpu", resamples=10, test=(demo_run.dataset.val, "val"))
    q_val = val.probabilities("temperature")
    scores = np.sort(1 - q_val[np.arange(len(val.labels)), val.labels])
    n = len(scores)
    threshold = scores[int(np.ceil((n + 1) * 0.8)) - 1]

    rows, classes, p, q, y = _read_predictions(tmp_path / "predictions.csv")
    sets = np.array([[c in r["prediction_set"].split("|") for c in classes] for r in rows])
    expected = q >= 1 - threshold
    clear = np.abs(q - (1 - threshold)) > 1e-5  # away from the boundary's float rounding
    assert np.array_equal(sets[clear], expected[clear])

    report = json.loads((tmp_path / "metrics.json").read_text())["conformal"]
    assert report["method"] == "lac" and report["coverage_target"] == 0.8
    assert report["calibration_images"] == n == len(demo_run.dataset.val)
    assert report["calibrated_on"] == "validation"
    covered = sets[np.arange(len(y)), y]
    assert report["set_coverage"]["value"] == pytest.approx(covered.mean())
    assert report["mean_set_size"]["value"] == pytest.approx(sets.sum(1).mean())
    for name in ("set_coverage", "mean_set_size"):
        lo, hi = report[name]["ci95"]
        assert lo <= report[name]["value"] <= hi
    with open(tmp_path / "per_class.csv", newline="") as fh:
        per_class = list(csv.DictReader(fh))
    for c, row in enumerate(per_class):
        assert float(row["set_coverage"]) == pytest.approx(covered[y == c].mean())
        assert float(row["mean_set_size"]) == pytest.approx(sets[y == c].sum(1).mean())

    # RAPS (the default) and APS sets are never empty; per-class thresholds, one a class
    for method in ("raps", "aps"):
        fitted = evaluate(best, device="cpu", resamples=20, class_conditional=True,
                          **({} if method == "raps" else {"conformal": method}))
        assert fitted.prediction_sets.sum(1).min() >= 1
        assert fitted.conformal.method == method and len(fitted.conformal.thresholds) == 12


def test_a_checkpoint_without_a_conformal_calibration_still_evaluates(demo_run, tmp_path):
    import torch

    state = torch.load(demo_run.store.checkpoint_path("best.pt"), weights_only=True)
    del state["conformal"]  # as olsdesk saved them before it kept one
    old = tmp_path / "old.pt"
    torch.save(state, old)
    ev = evaluate(old, device="cpu", resamples=20, test=(demo_run.dataset.test, "test"))
    assert ev.conformal is None and ev.metrics_dict()["conformal"] is None
    assert any("no conformal calibration" in w for w in ev.warnings)
    write_evaluation(ev, tmp_path / "out")
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        assert {r["prediction_set"] for r in csv.DictReader(fh)} == {""}


def test_ood_data_is_told_from_the_test_split_as_scikit_learn_computes_it(tmp_path, capsys):
    """--ood-data: AUROC and FPR at 95 % TPR between the test images' familiarity (read back
    from predictions.csv) and each readable file's (from Predictor), the shares marked."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from olsdesk.core.predictor import Predictor

    run = _train(RunConfig(demo_per_class=24, **{**TINY, "epochs": 2}), tmp_path / "runs")
    best = run.store.checkpoint_path("best.pt")
    digits = tmp_path / "digits"
    digits.mkdir()
    for i, image in enumerate(load_digits().images[:20]):
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(digits / f"{i}.png")
    (digits / "notes.txt").write_text("not an image")
    ev = evaluate(best, device="cpu", resamples=20, ood_data=str(digits))
    write_evaluation(ev, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())["ood"]
    with open(tmp_path / "out" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    familiar = np.array([float(r["familiarity"]) for r in rows])
    outside = np.array([p.familiarity for p in
                        Predictor.from_checkpoint(best, device="cpu").predict([digits])
                        if p.ok])
    assert report["method"] == "mahalanobis" and report["fitted_on"] == "validation"
    assert (report["familiar_images"], report["unfamiliar_images"]) == (len(rows), 20)
    assert report["folder_unreadable"] == 1
    truth = np.r_[np.ones(len(familiar)), np.zeros(20)]
    assert report["auroc"] == pytest.approx(roc_auc_score(truth, np.r_[familiar, outside]),
                                            abs=1e-6)
    assert report["fpr_at_95_tpr"] == pytest.approx(
        (outside >= np.quantile(familiar, 0.05)).mean())
    assert report["test_unfamiliar"] == pytest.approx(
        np.mean([r["unfamiliar"] == "True" for r in rows]))
    assert report["test_unfamiliar"] == pytest.approx((familiar < report["threshold"]).mean())
    assert report["folder_unfamiliar"] == pytest.approx((outside < report["threshold"]).mean())
    assert report["auroc"] > 0.9  # digits are nothing like the demo's scans

    assert main(["evaluate", "--checkpoint", str(best), "--out", str(tmp_path / "cli"),
                 "--ood-data", str(digits), "--resamples", "20", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "AUROC" in said
    with open(tmp_path / "cli" / "top_confusions.csv", newline="") as fh:
        confused = list(csv.DictReader(fh))[:5]
    assert confused  # the demo's tiny model errs; the five largest, as the file ranks them
    lines = said.split("most confused")[1].splitlines()[1:len(confused) + 1]
    assert [line.split(":")[0].strip() for line in lines] == [
        f"{r['true']} -> {r['predicted']}" for r in confused]
    assert main(["evaluate", "--checkpoint", str(best), "--out", str(tmp_path / "cli"),
                 "--ood-data", str(digits / "0.png"), "--device", "cpu"]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["vector", "histogram"])
def test_every_recalibrator_is_fitted_on_validation_and_scored_on_test(demo_run, tmp_path,
                                                                        method):
    """--recalibration writes the chosen recalibrator's probabilities (r_ columns); its
    numbers in metrics.json are those of the metric module on them, and they are the
    checkpoint's validation fit applied to the raw test probabilities."""
    from olsdesk.core.runs import load_checkpoint

    checkpoint = demo_run.store.checkpoint_path("best.pt")
    ev = evaluate(checkpoint, device="cpu", resamples=100, recalibration=method)
    write_evaluation(ev, tmp_path)
    rows, classes, p, q, y = _read_predictions(tmp_path / "predictions.csv")
    good = [r for r in rows if not r["error"]]
    r = np.array([[float(row[f"r_{c}"]) for c in classes] for row in good])
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-6)
    stored = load_checkpoint(checkpoint).recalibrators
    assert stored.methods == ("temperature", "vector", "histogram")
    np.testing.assert_allclose(stored.apply(method, np.log(np.clip(p, 1e-300, None))), r,
                               atol=2e-6)
    report = json.loads((tmp_path / "metrics.json").read_text())["recalibration"]
    assert report["chosen"] == method and report["fitted_on"] == "validation"
    assert set(report["compared"]) == {"none", "temperature", "vector", "histogram"}
    got = report["compared"][method]
    expected = {"top1": metrics.topk_accuracy(r, y, 1),
                "nll": metrics.negative_log_likelihood(r, y),
                "brier": metrics.brier_score(r, y),
                "ece": metrics.expected_calibration_error(r, y),
                # binned outputs tie: equal-count bins then split a tied confidence by
                # order (as adaptive ECE does), where Kumar's package bins by value
                "l2_ce_debiased": (kumar.lower_bound_scaling_top_ce(
                    r, y, p=2, debias=True, num_bins=15) if method == "vector" else
                    metrics.debiased_l2_calibration_error(r, y))}
    for name, value in expected.items():
        assert got[name]["value"] == pytest.approx(value, abs=2e-5), name
    assert report["compared"]["temperature"]["nll"]["value"] == pytest.approx(
        metrics.negative_log_likelihood(q, y), abs=2e-6)
    with open(tmp_path / "reliability_smooth.csv", newline="") as fh:
        smooth = list(csv.DictReader(fh))
    assert len(smooth) == 201 and f"{method}_accuracy" in smooth[0]


def _binned_ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE by hand: 15 equal-width bins of the top-label confidence, (lo, hi]."""
    conf, hit = p.max(1), p.argmax(1) == y
    total = 0.0
    for lo, hi in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:],
                      strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    return total


def test_head_medium_and_tail_by_training_frequency_match_a_hand_count(tmp_path, capsys):
    sizes = {"a": 40, "b": 30, "c": 24, "d": 16, "e": 12, "f": 8}
    root = make_class_folder(tmp_path / "data", sizes)
    trainer = _train(RunConfig(data=str(root), test_fraction=0.25, **TINY), tmp_path / "runs")
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(trainer.store.checkpoint_path("best.pt")),
                 "--out", str(out), "--resamples", "50", "--device", "cpu"]) == 0
    assert "by training frequency (classes in thirds" in capsys.readouterr().out
    found = json.loads((out / "metrics.json").read_text())["frequency"]
    counts = trainer.dataset.per_class_counts()
    train = np.array([counts[c][0] for c in trainer.dataset.class_names])
    assert found["imbalance_ratio"] == pytest.approx(train.max() / train.min())
    assert not found["equal_classes"]
    rows, classes, p, _, y = _read_predictions(out / "predictions.csv")
    for name, members in (("head", [0, 1]), ("medium", [2, 3]), ("tail", [4, 5])):
        group = found["groups"][name]
        inside = np.isin(y, members)
        assert group["classes"] == 2 and group["test_images"] == int(inside.sum())
        assert group["train_images"] == [int(train[members].min()), int(train[members].max())]
        hits = p[inside].argmax(1) == y[inside]
        assert group["accuracy"] == pytest.approx(hits.mean())
        assert group["balanced_accuracy"] == pytest.approx(
            np.mean([hits[y[inside] == c].mean() for c in members]))
        # predictions.csv rounds the probabilities: agreement to its precision
        assert group["ece"] == pytest.approx(_binned_ece(p[inside], y[inside]), abs=1e-6)


def test_with_equal_classes_there_is_no_head_or_tail(tmp_path, capsys):
    """Classes of equal size: the thirds would follow the class order, which says
    nothing about frequency, and the summary says so instead of listing them."""
    root = make_class_folder(tmp_path / "data", {"a": 16, "b": 16, "c": 16})
    trainer = _train(RunConfig(data=str(root), test_fraction=0.25, **TINY), tmp_path / "runs")
    counts = trainer.dataset.per_class_counts()
    each = {counts[c][0] for c in trainer.dataset.class_names}
    assert len(each) == 1
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(trainer.store.checkpoint_path("best.pt")),
                 "--out", str(out), "--resamples", "20", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert (f"by training frequency: every class has {each.pop()} training images, so there "
            "is no head or tail") in printed and "classes in thirds" not in printed
    found = json.loads((out / "metrics.json").read_text())["frequency"]
    assert found["equal_classes"] and found["imbalance_ratio"] == 1.0


def _csv_module_predictions(ev, path):
    """predictions.csv as the csv module writes it, row by row (olsdesk 0.3's writer):
    the reference the fast writer must equal byte for byte."""
    from olsdesk.errors import printable
    names = ev.class_names
    header = [f"p_{n}" for n in names] + [f"q_{n}" for n in names]
    values_all = np.concatenate([ev.probabilities(), ev.probabilities("temperature")], axis=1)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "prediction"] + header
                        + ["prediction_set", "familiarity", "unfamiliar", "error"])
        sets, familiar = ev.prediction_sets, ev.familiarity
        marked = ev.detector.unfamiliar(familiar) if familiar is not None else None
        for i, name in enumerate(ev.names):
            members = ("|".join(names[k] for k in np.flatnonzero(sets[i]))
                       if sets is not None else "")
            ood = [f"{familiar[i]:.8g}", bool(marked[i])] if familiar is not None else ["", ""]
            writer.writerow([printable(name), names[ev.labels[i]], names[ev.predicted[i]]]
                            + [f"{v:.8g}" for v in values_all[i]] + [members, *ood, ""])
        for name, label, sentence in ev.unreadable:
            writer.writerow([printable(name), label, ""] + [""] * len(header)
                            + ["", "", "", sentence])


def test_predictions_csv_is_the_csv_modules_byte_for_byte_and_the_npz_holds_its_numbers(
        demo_run, tmp_path, monkeypatch):
    import dataclasses

    from olsdesk.core import evaluation as module
    from olsdesk.core.evaluation import _write_predictions, _write_predictions_npz
    monkeypatch.setattr(module, "ROWS", 5)  # several blocks, one short
    ev = evaluate(demo_run.store.checkpoint_path("best.pt"), device="cpu", resamples=20)
    names = list(ev.names)
    names[0], names[1], names[2] = 'a,comma.png', 'say "cheese".png', "new\nline.png"
    ev = dataclasses.replace(ev, names=names, unreadable=[
        ("broken, really.png", "CT/lung", 'cannot be read: "truncated"'), ("b.png", "MR", "x")])
    for familiar in (ev.familiarity, None):
        ev = dataclasses.replace(ev, familiarity=familiar)
        _write_predictions(ev, tmp_path / "fast.csv")
        _csv_module_predictions(ev, tmp_path / "reference.csv")
        assert (tmp_path / "fast.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()
    ev = dataclasses.replace(ev, familiarity=evaluate(
        demo_run.store.checkpoint_path("best.pt"), device="cpu", resamples=20).familiarity)
    _write_predictions_npz(ev, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        assert list(z["paths"]) == names and tuple(z["class_names"]) == ev.class_names
        np.testing.assert_array_equal(z["labels"], ev.labels)
        np.testing.assert_array_equal(z["predicted"], ev.probabilities().argmax(1))
        np.testing.assert_allclose(z["probs"], ev.probabilities(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(z["temperature_probs"], ev.probabilities("temperature"),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(z["prediction_sets"], ev.prediction_sets)
        assert z["probs"].dtype == np.float32 and float(z["temperature"]) == ev.temperature
        np.testing.assert_allclose(z["familiarity"], ev.familiarity, rtol=1e-6)
        np.testing.assert_array_equal(z["unfamiliar"], ev.detector.unfamiliar(ev.familiarity))


def test_a_recorded_test_file_outside_the_class_folders_is_never_trusted(tmp_path):
    from olsdesk.core.data.sources import recorded_files

    root = make_class_folder(tmp_path / "data", {"a": 2, "b": 2})
    base = str(root.resolve())
    inside = [f"{base}/a/img000.png", f"{base}/b/img001.png"]
    found, gone = recorded_files(root, inside, ("a", "b"))
    assert list(found.paths) == inside and found.labels.tolist() == [0, 1] and gone == 0
    # a class the checkpoint names '..' or a name that climbs out: opened as usual
    (tmp_path / "secret.png").write_bytes(b"x")
    assert recorded_files(root, [f"{base}/a/../../secret.png"], ("a", "b")) is None
    assert recorded_files(root, [f"{base}/../secret.png"], ("a", "..")) is None
    assert recorded_files(root, [str(tmp_path / "secret.png")], ("a", "b")) is None
    assert recorded_files(root, [f"{base}/c/img000.png"], ("a", "b")) is None


@pytest.mark.parametrize("method", ["vector", "histogram"])
def test_an_evaluated_image_has_the_numbers_predict_shows_for_its_logits(demo_run, method):
    """The Evaluation keeps the model's float32 logits and computes every probability from
    them as Predictor does: raw, temperature-scaled and recalibrated, bit for bit."""
    from olsdesk.core.predictor import Predictor

    checkpoint = demo_run.store.checkpoint_path("best.pt")
    ev = evaluate(checkpoint, device="cpu", resamples=20, recalibration=method)
    assert ev.logits.dtype == np.float32
    np.testing.assert_array_equal(ev.max_logit, ev.logits.max(axis=1))
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    predictor.use_recalibration(method)
    for row in range(len(ev.labels)):
        shown = predictor._prediction(ev.names[row], ev.logits[row], 3, None, None)
        np.testing.assert_array_equal(shown.probabilities, ev.probabilities()[row])
        np.testing.assert_array_equal(shown.calibrated_probabilities,
                                      ev.probabilities(method)[row])
        assert shown.top_classes[0] == ev.class_names[ev.predicted[row]]
    predictor.use_recalibration("temperature")
    shown = predictor._prediction(ev.names[0], ev.logits[0], 3, None, None)
    np.testing.assert_array_equal(shown.calibrated_probabilities, ev.probabilities("temperature")[0])
