"""Evaluation of a checkpoint on a test split it has never seen, with 95 % intervals.

``iter_evaluate`` runs the model over the test images (the run's held-out split, the
data's own test split, or an external folder) with the checkpoint's preprocessing,
applies the temperature fitted on validation, and bootstraps every metric over images
(``core.bootstrap``). ``write_evaluation`` writes what a paper or a reviewer needs:
predictions.csv (and its numbers as predictions.npz), metrics.json, per_class.csv,
confusion_matrix.csv, top_confusions.csv, reliability.csv and, with a renderer, the
figures. ``olsdesk evaluate``, the study and the app all use it.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from itertools import chain
from pathlib import Path

import numpy as np

from olsdesk.config import RECALIBRATORS
from olsdesk.core import metrics
from olsdesk.core.bootstrap import (
    CLASS_METRICS,
    SUMMARY_METRICS,
    BootstrapResult,
    Selective,
    mean_samples,
    metric_samples,
    percentile_ci,
    smooth_reliability_band,
)
from olsdesk.core.calibration import apply_temperature, by_row_blocks
from olsdesk.core.conformal import (
    DEFAULT_METHOD,
    ConformalSets,
    class_coverage,
    covered_and_size,
)
from olsdesk.core.ood import Familiarity, detection_metrics
from olsdesk.core.outputs import output_folder
from olsdesk.core.tables import ROWS, csv_field, float_row_blocks
from olsdesk.errors import DataError, RunError, printable

DEFAULT_RESAMPLES = 1000
METRIC_LABELS = {"top1": "Top-1", "top5": "Top-5", "nll": "NLL", "brier": "Brier",
                 "ece": "ECE", "mce": "MCE", "adaptive_ece": "adaptive ECE",
                 "classwise_ece": "classwise ECE", "smooth_ece": "smooth ECE",
                 "l2_ce_debiased": "debiased L2 CE", "macro_auroc": "macro AUROC",
                 "balanced_accuracy": "balanced accuracy", "aurc": "AURC",
                 "eaurc": "E-AURC"}
# selective prediction: the coverages whose accuracy is reported, the accuracies whose
# referral rate is, and the scores ranked (higher = more confident)
COVERAGES = (0.8, 0.9, 0.95)
TARGET_ACCURACIES = (0.9, 0.95, 0.99)
SCORES = {"raw": "top-1 probability", "temperature_scaled": "temperature-scaled top-1 "
          "probability", "negative_entropy": "minus the entropy of the prediction",
          "max_logit": "largest logit"}
CURVE_POINTS = 1000  # rows of risk_coverage.csv at most
# what the recalibrators are compared on (metrics.json's ``recalibration``)
RECALIBRATION_METRICS = ("top1", "nll", "brier", "ece", "adaptive_ece", "classwise_ece",
                         "smooth_ece", "l2_ce_debiased", "aurc")
SMOOTH_POINTS = 201  # rows of reliability_smooth.csv
BAND_RESAMPLES = 200  # resamples behind the smooth curve's band


@dataclass(frozen=True)
class EvaluationProgress:
    done: int  # images through the model
    total: int
    phase: str  # "predict" or "bootstrap"


@dataclass
class Evaluation:
    """A checkpoint's predictions on a test split, and every metric with its interval."""

    checkpoint: str
    epoch: int | None
    class_names: tuple[str, ...]
    source: str  # where the test images came from, in words
    names: list[str]  # readable test images, in order
    labels: np.ndarray  # (N,)
    # (N, K) float32: the model's outputs, from which every probability here is computed
    # as prediction computes it (half the memory of float64 log-probabilities)
    logits: np.ndarray
    temperature: float  # fitted on the validation split
    unreadable: list[tuple[str, str, str]]  # (name, label, sentence)
    raw: BootstrapResult
    scaled: BootstrapResult
    resamples: int
    seed: int
    n_bins: int
    warnings: list[str] = field(default_factory=list)
    # where each row's image is, to look at it again (the error browser): the test samples
    # and each row's index among them
    samples: object = field(default=None, repr=False, compare=False)
    sample_index: np.ndarray | None = field(default=None, repr=False, compare=False)
    max_logit: np.ndarray | None = field(default=None, repr=False)  # (N,), a score
    # split-conformal sets from the checkpoint's validation calibration (None: an older
    # checkpoint without one), each image's set, and (coverage, mean size) a resample
    conformal: ConformalSets | None = None
    prediction_sets: np.ndarray | None = field(default=None, repr=False)  # (N, K) bool
    conformal_samples: np.ndarray | None = field(default=None, repr=False)  # (R, 2)
    # the unfamiliar-input detector's score of every test image (None: an older
    # checkpoint without a detector), and of the readable images of --ood-data
    familiarity: np.ndarray | None = field(default=None, repr=False)
    detector: Familiarity | None = None
    ood_folder: str | None = None
    ood_scores: np.ndarray | None = field(default=None, repr=False)
    ood_unreadable: int = 0
    # every recalibrator fitted on validation beside the temperature (vector scaling,
    # histogram binning: those the checkpoint holds), scored on these images on the same
    # resamples, and the one --recalibration chose (its probabilities go to
    # predictions.csv when it is not the temperature)
    recalibrators: object = field(default=None, repr=False)  # calibration.Recalibration
    recalibrated: dict[str, BootstrapResult] = field(default_factory=dict, repr=False)
    recalibration: str = "temperature"
    # each class's training images (from the run's run.json; None without one): what
    # the head / medium / tail groups are made of
    train_counts: np.ndarray | None = field(default=None, repr=False)

    def results(self) -> dict[str, BootstrapResult]:
        """Every way of calibrating compared, raw first: "none", "temperature", then the
        others the checkpoint holds."""
        return {"none": self.raw, "temperature": self.scaled, **self.recalibrated}

    def _probs_of(self, method: str) -> Callable[[np.ndarray], np.ndarray]:
        """Rows of logits -> their probabilities after ``method``, as prediction computes
        them."""
        if method == "none":
            return lambda z: apply_temperature(z, 1.0)
        if method == "temperature":
            return lambda z: apply_temperature(z, self.temperature)
        return partial(self.recalibrators.apply_to_logits, method)

    def probabilities(self, method: str = "none", rows=slice(None),
                      dtype=np.float64) -> np.ndarray:
        """The test probabilities after ``method`` ("none": raw; "temperature", or any
        recalibrator the checkpoint holds) of ``rows`` (a slice, indices or a mask),
        computed from the logits a block of rows at a time. Not kept: at 200,000 x 165
        each matrix is 252 MB of float64; what is read again (each row's confidence and
        predicted class) ``top_label`` keeps."""
        probs_of = self._probs_of(method)
        return by_row_blocks(lambda z: probs_of(z).astype(dtype, copy=False),
                             self.logits[rows])

    def top_label(self, method: str = "none") -> tuple[np.ndarray, np.ndarray]:
        """(confidence, predicted class) of every row after ``method``, computed once."""
        cache = self.__dict__.setdefault("_top_label", {})
        if method not in cache:
            probs_of = self._probs_of(method)

            def top(z: np.ndarray) -> np.ndarray:
                p = probs_of(z)
                return np.stack([p.max(axis=1), p.argmax(axis=1)], axis=1)

            found = by_row_blocks(top, self.logits)
            cache[method] = found[:, 0].copy(), found[:, 1].astype(np.int64)
        return cache[method]

    def hits(self, method: str = "none") -> np.ndarray:
        """Whether each row's predicted class after ``method`` is its label."""
        return self.top_label(method)[1] == self.labels

    def recalibration_dict(self) -> dict:
        """metrics.json's ``recalibration`` section: each recalibrator fitted on
        validation, compared on these test images (value and interval, same resamples)."""
        return {"chosen": self.recalibration, "fitted_on": "validation",
                "compared": {name: _block(result, RECALIBRATION_METRICS)
                             for name, result in self.results().items()}}

    def smooth_tables(self) -> dict[str, tuple]:
        """(metrics.SmoothReliability, its 95 % band) of the raw and of the chosen
        recalibrated probabilities: computed once (the file and the app read them)."""
        cache = self.__dict__.setdefault("_smooth_tables", {})
        for name in ("none", self.recalibration):
            if name not in cache:
                conf, hits = self.top_label(name)[0], self.hits(name)
                table = metrics.smooth_reliability(conf, hits)
                cache[name] = (table, smooth_reliability_band(
                    conf, hits, table.bandwidth, min(self.resamples, BAND_RESAMPLES),
                    self.seed))
        return {name: cache[name] for name in ("none", self.recalibration)}

    def ood_dict(self) -> dict | None:
        """metrics.json's ``ood`` section: the score, its threshold, the share of test
        images it marks; with --ood-data, how well it tells that folder from the test
        split (AUROC, FPR at 95 % TPR) and the share of the folder it marks."""
        if self.detector is None:
            return None
        out = {"method": self.detector.method, "threshold": self.detector.threshold,
               "fitted_on": "validation", "keep_target": self.detector.keep,
               "test_unfamiliar": float(self.detector.unfamiliar(self.familiarity).mean())}
        if self.ood_scores is not None:
            out.update(folder=printable(self.ood_folder), folder_unreadable=self.ood_unreadable,
                       folder_unfamiliar=float(self.detector.unfamiliar(self.ood_scores).mean()),
                       **detection_metrics(self.familiarity, self.ood_scores))
        return out

    def conformal_dict(self) -> dict | None:
        """metrics.json's ``conformal`` section (None without a calibration)."""
        if self.conformal is None:
            return None
        covered, size = covered_and_size(self.prediction_sets, self.labels)
        out = {**self.conformal.to_dict(), "calibrated_on": "validation"}
        for name, values, column in (("set_coverage", covered, 0),
                                     ("mean_set_size", size, 1)):
            out[name] = {"value": float(np.mean(values)),
                         "ci95": [_num(x) for x in percentile_ci(
                             self.conformal_samples[:, column])]}
        out["empty_sets"] = int((size == 0).sum())
        return out

    def scores(self) -> dict[str, np.ndarray]:
        """The confidence scores selective prediction ranks by (SCORES), each image's."""
        def negative_entropy(probs: np.ndarray) -> np.ndarray:
            p = np.clip(probs, 1e-300, 1.0)
            return (p * np.log(p)).sum(axis=1)

        found = {"raw": self.top_label("none")[0],
                 "temperature_scaled": self.top_label("temperature")[0],
                 "negative_entropy": by_row_blocks(
                     lambda z: negative_entropy(self._probs_of("none")(z)), self.logits)}
        if self.max_logit is not None:
            found["max_logit"] = self.max_logit
        return found

    @cached_property
    def selective(self) -> dict[str, Selective]:
        correct = self.predicted == self.labels
        return {name: Selective(score, correct) for name, score in self.scores().items()}

    @cached_property
    def frequency(self) -> dict | None:
        """metrics.json's ``frequency``: accuracy, balanced accuracy and ECE (raw and
        temperature-scaled) of the head, medium and tail classes (FREQUENCY_GROUPS: the
        classes in thirds by training images, most first), with the imbalance ratio
        and whether every class has as many (``equal_classes``: then the thirds say
        nothing); None without the training counts."""
        if self.train_counts is None:
            return None
        counts = np.asarray(self.train_counts)
        groups = frequency_groups(counts)
        predicted = self.predicted
        raw, scaled = self.top_label("none")[0], self.top_label("temperature")[0]
        raw_hits, scaled_hits = self.hits("none"), self.hits("temperature")
        out = {"definition": FREQUENCY_DEFINITION,
               "imbalance_ratio": float(counts.max() / max(counts[counts > 0].min(), 1))
               if (counts > 0).any() else math.nan,
               # every class as large: the thirds then follow the class order, no frequency
               "equal_classes": bool(counts.min() == counts.max()), "groups": {}}
        for g, name in enumerate(FREQUENCY_GROUPS):
            classes = np.flatnonzero(groups == g)
            rows = np.isin(self.labels, classes)
            n = int(rows.sum())
            entry = {"classes": len(classes),
                     "train_images": [int(counts[classes].min()), int(counts[classes].max())]
                     if len(classes) else [0, 0], "test_images": n}
            if n:
                labels = self.labels[rows]
                hits = predicted[rows] == labels
                k = len(self.class_names)
                seen = np.bincount(labels, minlength=k)[classes]
                right = np.bincount(labels, weights=hits, minlength=k)[classes]
                entry.update({
                    "accuracy": float(hits.mean()),
                    "balanced_accuracy": float(np.mean(right[seen > 0] / seen[seen > 0])),
                    "ece": metrics.ece_of_confidence(raw[rows], raw_hits[rows], self.n_bins),
                    "ece_scaled": metrics.ece_of_confidence(scaled[rows], scaled_hits[rows],
                                                            self.n_bins)})
            out["groups"][name] = entry
        return out

    def selective_dict(self) -> dict:
        """metrics.json's ``selective`` section: per score, AURC and E-AURC (the raw and
        scaled ones with intervals in their sections), accuracy at each coverage and the
        share to refer for each target accuracy."""
        out = {}
        for name, sel in self.selective.items():
            aurc, eaurc = (float(v[0]) for v in sel.aurc(np.ones((sel.n, 1))))
            out[name] = {
                "score": SCORES[name], "aurc": aurc, "eaurc": eaurc,
                "accuracy_at_coverage": {f"{c:g}": sel.accuracy_at(c) for c in COVERAGES},
                "referral_for_accuracy": {f"{a:g}": sel.referral_for(a)
                                          for a in TARGET_ACCURACIES}}
        return out

    def risk_coverage(self, points: int = CURVE_POINTS) -> dict[str, tuple]:
        """Each score's (coverage, risk) at ``points`` evenly spaced k (the last k = N),
        as risk_coverage.csv holds them."""
        n = len(self.labels)
        ks = np.unique(np.linspace(1, n, min(n, points)).round().astype(int))
        return {name: (ks / n, sel.curve()[1][ks - 1]) for name, sel in self.selective.items()}

    def prepare(self) -> Evaluation:
        """Compute what the files and the app read (curves, recalibrated probabilities,
        smooth reliability, the head / tail table), so that a GUI thread only draws."""
        for sel in self.selective.values():
            sel.curve()
        self.smooth_tables()
        for name in {"none", "temperature", self.recalibration}:
            self.reliability(name)
        _ = self.frequency
        return self

    def reliability(self, method: str) -> metrics.ReliabilityBins:
        """The reliability bins of the probabilities after ``method`` ("none": raw),
        computed once (reliability.csv, the diagrams and the figures read them)."""
        cache = self.__dict__.setdefault("_reliability", {})
        if method not in cache:
            cache[method] = metrics.reliability_of_confidence(
                self.top_label(method)[0], self.hits(method), self.n_bins)
        return cache[method]

    def rows(self, true: int | None = None, predicted: int | None = None,
             confidence_bin: int | None = None, scaled: bool = False,
             wrong: bool = False, most_confident_first: bool = True) -> np.ndarray:
        """Rows of the images with this true class, this predicted class, a top-class
        confidence in this reliability bin (of ``n_bins``, as the diagram and ECE bin it)
        and, with ``wrong``, only the misclassified, sorted by that confidence: a
        confusion cell's images, a class's mistakes, or a reliability bin's, the most
        confident first."""
        conf = self.top_label("temperature" if scaled else "none")[0]
        keep = np.ones(len(self.labels), dtype=bool)
        if true is not None:
            keep &= self.labels == true
        if predicted is not None:
            keep &= self.predicted == predicted
        if wrong:
            keep &= self.predicted != self.labels
        if confidence_bin is not None:
            keep &= metrics.bin_index(conf, self.n_bins) == confidence_bin
        rows = np.flatnonzero(keep)
        order = np.argsort(-conf[rows] if most_confident_first else conf[rows], kind="stable")
        return rows[order]

    @cached_property
    def predicted(self) -> np.ndarray:
        """Each row's predicted class (temperature scaling does not change it)."""
        return self.logits.argmax(axis=1)

    def confusion(self) -> np.ndarray:
        """Counts, rows = true class, columns = predicted class."""
        k = len(self.class_names)
        return np.bincount(self.labels * k + self.predicted, minlength=k * k).reshape(k, k)

    def top_confusions(self, limit: int | None = None) -> list[metrics.Confusion]:
        """The test images' errors by (true, predicted) class pair, most images first."""
        return metrics.top_confusions(self.confusion(), limit)

    def metrics_dict(self) -> dict:
        """metrics.json's contents."""
        return {
            "split": "test", "test_images": self.source, "checkpoint": self.checkpoint,
            "epoch": self.epoch, "raw": _block(self.raw),
            "temperature_scaled": _block(self.scaled), "temperature": self.temperature,
            "recalibration": self.recalibration_dict(),
            "n_images": len(self.labels), "n_unreadable": len(self.unreadable),
            "bootstrap_resamples": self.resamples, "bootstrap_seed": self.seed,
            "rank_metrics_resampling": self.raw.rank_method,
            "calibration_bins": self.n_bins, "class_names": list(self.class_names),
            "selective": self.selective_dict(), "conformal": self.conformal_dict(),
            "ood": self.ood_dict(), "frequency": self.frequency,
            "warnings": self.warnings,
        }


    def summary_lines(self) -> list[str]:
        """A Markdown table of every test metric with its interval, raw and scaled, and a
        line saying which images and checkpoint they come from (report.md)."""
        lines = [f"{len(self.labels)} test images ({self.source}) scored with "
                 f"{Path(self.checkpoint).name}"
                 + (f" (epoch {self.epoch})" if self.epoch is not None else "")
                 + f"; T = {self.temperature:.3f} from validation; 95 % intervals from "
                 f"{self.resamples} bootstrap resamples.", "",
                 "| metric | raw | temperature-scaled |", "|---|---|---|"]
        lines += [f"| {METRIC_LABELS[m]} | "
                  + " | ".join(format_interval(r.value[m], r.interval(m))
                               for r in (self.raw, self.scaled)) + " |"
                  for m in SUMMARY_METRICS]
        return lines


FREQUENCY_GROUPS = ("head", "medium", "tail")
FREQUENCY_DEFINITION = ("classes ranked by their training images, most first (ties in class "
                        "order), cut into three groups of as equal a number of classes as "
                        "can be: head, medium, tail")


def frequency_groups(train_counts: np.ndarray) -> np.ndarray:
    """Each class's group: 0 head, 1 medium, 2 tail (FREQUENCY_DEFINITION)."""
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    groups = np.empty(len(order), dtype=np.int64)
    for g, part in enumerate(np.array_split(order, 3)):
        groups[part] = g
    return groups


def _train_counts(checkpoint: str | Path, class_names: tuple[str, ...]) -> np.ndarray | None:
    """The run's training images a class, from the run.json beside the checkpoint."""
    from olsdesk.core.runs import RunStore

    folder = Path(checkpoint).parent.parent
    if not (folder / "run.json").is_file():
        return None
    try:
        per_class = RunStore(folder).info().dataset.per_class
        return np.array([per_class[name][0] for name in class_names], dtype=np.int64)
    except (OSError, KeyError, TypeError, ValueError, RunError):
        return None


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no NaN


def _block(result: BootstrapResult, names=SUMMARY_METRICS) -> dict:
    """Each metric's value and 95 % interval, as metrics.json holds them."""
    return {m: {"value": _num(result.value[m]), "ci95": [_num(x) for x in result.interval(m)]}
            for m in names}


def open_test_split(predictor, data: str | None = None, split_csv: str | None = None,
               test_data: str | None = None) -> tuple[object, str, list[str]]:
    """(samples, where they come from, warnings): the test images to evaluate the
    predictor's checkpoint on. Without arguments, the run's own test split, opened from
    the configuration stored in the checkpoint. DataError says why there is none."""
    from olsdesk.core.data.sources import open_dataset, open_test_folder

    if test_data:
        return (open_test_folder(test_data, predictor.class_names),
                f"the external folder {printable(test_data)}", [])
    config = predictor.config
    if config is None:
        raise DataError("the checkpoint does not say what it was trained on; give "
                        "--test-data FOLDER.")
    if data:
        config = config.replace(data=data, split_csv=split_csv, test_data=None)
    else:
        _check_stored_folders(config, predictor.class_names)
        if not config.test_data:
            found = _recorded_test_files(predictor.source, config, predictor.class_names)
            if found is not None:
                return found
    # the audit is in run.json already; hashing again is needed only to drop the same
    # leaked copies training dropped
    dataset = open_dataset(config.replace(audit_data=config.drop_duplicates))
    if dataset.class_names != predictor.class_names:
        raise DataError(f"{printable(config.data)} has other classes than the checkpoint "
                        f"({len(dataset.class_names)} against {len(predictor.class_names)}); "
                        "point --data at the data it was trained on.")
    warnings = []
    if not data and not config.test_data:  # the run's own data: the split it recorded
        dataset, changed = _recorded_split(predictor.source, dataset)
        warnings += [changed] if changed else []
    if dataset.test is None:
        raise DataError(f"{printable(config.data)} has no test split for this run (it was "
                        "trained before olsdesk held one out, with a test fraction of 0, or "
                        "its split CSVs have no test file); give --test-data FOLDER.")
    return dataset.test, dataset.test_source or "the data's test split", warnings


def _classes_without_test(labels: np.ndarray, class_names: tuple[str, ...],
                          shown: int = 5) -> list[str]:
    """A warning naming the classes the test images leave out: their recall and their
    share of every average are not measured, which a table of numbers does not show."""
    from olsdesk.core.data.sources import missing_classes

    missing = [printable(n) for n in missing_classes(labels, class_names)]
    if not missing:
        return []
    return [f"{len(missing):,} of {len(class_names):,} classes have no test image, so "
            f"their recall is not measured and the averages leave them out: "
            f"{', '.join(missing[:shown])}{' …' if len(missing) > shown else ''}."]


def _check_stored_folders(config, class_names: tuple[str, ...]) -> None:
    """DataError unless the folders the checkpoint names hold its class folders. The
    checkpoint is a file from outside: before its stored path is walked, one look at
    the folder's class folders tells the training data from anything else (a crafted
    ``data: "/"`` walked the whole filesystem)."""
    from olsdesk.core.data.sources import data_kind

    if data_kind(config.data, config.split_csv) == "folder":
        root = Path(config.data).expanduser()
        missing = [c for c in class_names if not (root / c).is_dir()] if root.is_dir() else []
        if missing:
            raise DataError(
                f"the checkpoint's training data {printable(config.data)} does not hold its "
                f"class folders ({len(missing):,} of {len(class_names):,} missing, e.g. "
                f"{printable(missing[0])}); give --data FOLDER where the data is now, or "
                "--test-data FOLDER.")
    if config.test_data:
        root = Path(config.test_data).expanduser()
        if root.is_dir() and not any((root / c).is_dir() for c in class_names):
            raise DataError(
                f"the checkpoint's test folder {printable(config.test_data)} holds none of "
                "its class folders; give --test-data FOLDER where the test images are now.")


def _run_of(checkpoint: str):
    """The RunStore of the run folder holding ``checkpoint`` (<run>/checkpoints/x.pt),
    or None for a checkpoint outside one."""
    from olsdesk.core.runs import RunStore

    run = Path(checkpoint).parent.parent
    return RunStore(run) if (run / "run.json").is_file() else None


def _recorded_test_files(checkpoint: str, config, class_names: tuple[str, ...]):
    """(samples, source, warnings) of the test files the checkpoint's run recorded in
    its image folder, opened from that record (split.json.gz) without walking the folder
    (1.35 M files at RadImageNet's size); None when there is no such record or the
    data is not a folder (then it is opened and split as training split it)."""
    from olsdesk.core.data.sources import HELD_OUT, data_kind, recorded_files

    store = _run_of(checkpoint)
    if store is None or data_kind(config.data, config.split_csv) != "folder":
        return None
    try:
        split = store.split_names()
    except RunError:
        return None
    if not split or not split["test"]:
        return None
    found = recorded_files(Path(config.data), split["test"], class_names)
    if found is None:
        return None
    samples, gone = found
    warnings = [f"{gone:,} of the run's {len(split['test']):,} test files are gone since it "
                "recorded its split: they are left out."] if gone else []
    return samples, HELD_OUT, warnings


def _recorded_split(checkpoint: str, dataset):
    """``dataset`` split as the checkpoint's run recorded it (``keep_recorded_split``),
    with its sentence; as it is for a checkpoint outside a run folder."""
    store = _run_of(checkpoint)
    if store is None:
        return dataset, None
    try:
        return store.recorded_split(dataset)
    except RunError:
        return dataset, None


def iter_evaluate(checkpoint: str | Path, *, data: str | None = None,
                  split_csv: str | None = None, test_data: str | None = None,
                  device: str = "auto", resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  batch_size: int = 64, workers: int | None = None,
                  stop: threading.Event | None = None, test: tuple | None = None,
                  conformal: str = DEFAULT_METHOD, coverage: float = 0.9,
                  class_conditional: bool = False, ood_data: str | None = None,
                  recalibration: str = "temperature",
                  ) -> Iterator[EvaluationProgress | Evaluation]:
    """Progress while the test images go through the model, then the Evaluation.
    Setting ``stop`` ends it early without a result. ``test``: (samples, source) already
    opened (the study's), instead of opening them from the checkpoint's configuration.
    ``ood_data``: a folder of images unlike the training data, to measure how well the
    checkpoint's unfamiliar-input score tells them from the test images.
    ``recalibration``: the recalibrator whose probabilities predictions.csv gets beside
    the temperature's (every one the checkpoint holds is compared in any case)."""
    import torch
    from torch.utils.data import DataLoader

    from olsdesk.core.data.loader import TorchSamples, collate, default_workers
    from olsdesk.core.predictor import Predictor, expand_paths

    if recalibration not in RECALIBRATORS:
        raise DataError(f"--recalibration {printable(recalibration)} is not one of "
                        f"{', '.join(RECALIBRATORS)}.")
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    if recalibration not in predictor.recalibration.methods:
        raise DataError(f"the checkpoint holds no {recalibration} recalibration (it was "
                        "saved before olsdesk fitted one); --recalibration temperature works.")
    samples, source, warnings = (test + ([],) if test is not None
                                 else open_test_split(predictor, data, split_csv, test_data))
    warnings = list(warnings) + _classes_without_test(samples.labels, predictor.class_names)
    loader = DataLoader(TorchSamples(samples, predictor.preprocessing, train=False),
                        batch_size=batch_size, collate_fn=collate,
                        num_workers=default_workers(samples, workers, predictor.device),
                        pin_memory=predictor.device.type == "cuda")
    if ood_data is not None and not Path(ood_data).expanduser().is_dir():
        raise DataError(f"--ood-data {printable(ood_data)} is not a folder.")
    failed, familiar = [], []
    detector = predictor.familiarity
    done, total = 0, len(samples)
    # filled in place, a batch at a time: a list of batches and its concatenation held
    # two copies of the N x K outputs at once
    logits = np.empty((total, len(predictor.class_names)), dtype=np.float32)
    labels_np = np.empty(total, dtype=np.int64)
    index = np.empty(total, dtype=np.int64)
    kept = 0
    with torch.no_grad():
        for images, y, idx, bad in loader:
            if stop is not None and stop.is_set():
                return
            failed += bad
            done += len(bad)
            if images is not None:
                with predictor.precision():
                    out, features = predictor.model.forward_with_features(
                        predictor.inputs(images))
                if detector is not None:
                    familiar.append(detector.score(out.float().cpu().numpy(),
                                                   features.float().cpu().numpy()))
                end = kept + len(y)
                logits[kept:end] = out.float().cpu().numpy()
                labels_np[kept:end], index[kept:end] = y.numpy(), idx.numpy()
                kept = end
                done += len(y)
            yield EvaluationProgress(done, total, "predict")
    if not kept:
        raise DataError(f"none of the {total} test images could be read.")
    ood_scores, ood_unreadable = None, 0
    if ood_data is not None and detector is None:
        warnings = [*warnings, "the checkpoint holds no unfamiliar-input detector (it was "
                    "saved before olsdesk kept one): --ood-data is not measured."]
    elif ood_data is not None:
        found = []
        files = expand_paths([ood_data])
        for i, prediction in enumerate(predictor.iter_predict(files, top_k=1, cancel=stop,
                                                              expanded=True)):
            if prediction.ok:
                found.append(prediction.familiarity)
            else:
                ood_unreadable += 1
            yield EvaluationProgress(i + 1, len(files), "ood")
        if stop is not None and stop.is_set():
            return
        if not found:
            raise DataError(f"no image in --ood-data {printable(ood_data)} could be read "
                            f"({ood_unreadable} files).")
        ood_scores = np.array(found)
    logits = logits[:kept]  # less the unreadable
    labels_np, index = labels_np[:kept], index[:kept]
    names = [samples.describe(int(i)) for i in index]
    n_bins = predictor.config.calibration_bins if predictor.config is not None else 15
    yield EvaluationProgress(total, total, "bootstrap")
    # each scorer is given a function of the probabilities, not them: its float64 copy
    # is dropped before the resamples (the Evaluation computes its own once scored)
    raw = metric_samples(lambda: apply_temperature(logits, 1.0), labels_np,
                         resamples=resamples, seed=seed, n_bins=n_bins)
    scaled = metric_samples(lambda: apply_temperature(logits, predictor.temperature),
                            labels_np, resamples=resamples, seed=seed, n_bins=n_bins,
                            per_class=False)
    # each other recalibrator scored in turn, on the same resamples
    recalibrated = {method: metric_samples(
        partial(predictor.recalibration.apply_to_logits, method, logits), labels_np,
        resamples=resamples, seed=seed, n_bins=n_bins, per_class=False, ranks=False)
        for method in predictor.recalibration.methods if method != "temperature"}
    unreadable = [(samples.describe(i), predictor.class_names[int(samples.labels[i])],
                   message.split("\n", 1)[0]) for i, message in failed]
    sets = conformal_samples = None
    predictor.use_sets(conformal, coverage, class_conditional)
    fitted = predictor.sets  # calibrated on validation, never on these images
    if fitted is not None:
        sets = by_row_blocks(lambda z: fitted.sets(apply_temperature(z, predictor.temperature)),
                             logits)
        _, conformal_samples = mean_samples(np.stack(covered_and_size(sets, labels_np), 1),
                                            resamples=resamples, seed=seed)
    else:
        warnings = [*warnings, "the checkpoint holds no conformal calibration (it was saved "
                    "before olsdesk kept one): no prediction sets."]
    yield Evaluation(str(checkpoint), predictor.epoch, predictor.class_names, source, names,
                     labels_np, logits, predictor.temperature, unreadable, raw, scaled,
                     resamples, seed, n_bins, warnings, samples, index,
                     logits.max(axis=1).astype(np.float64), fitted, sets, conformal_samples,
                     np.concatenate(familiar) if familiar else None, detector, ood_data,
                     ood_scores, ood_unreadable, predictor.recalibration, recalibrated,
                     recalibration,
                     train_counts=_train_counts(checkpoint, predictor.class_names))


def evaluate(checkpoint: str | Path, **options) -> Evaluation:
    """``iter_evaluate`` to its end."""
    result = None
    for item in iter_evaluate(checkpoint, **options):
        result = item
    if not isinstance(result, Evaluation):
        raise RunError("the evaluation was stopped.")
    return result


# --- files ------------------------------------------------------------------------------
EvaluationRenderer = Callable[[Evaluation, Path], list[str]]


def write_evaluation(ev: Evaluation, out: str | Path,
                     renderer: EvaluationRenderer | None = None) -> list[Path]:
    """The evaluation's files in ``out``, written whole or not at all (OutputError says
    why not; the folder is then as it was); figures only with a renderer."""
    folder = Path(out).expanduser()
    with output_folder(folder) as out:
        names = [_write_predictions(ev, out / "predictions.csv").name,
                 _write_predictions_npz(ev, out / "predictions.npz").name]
        (out / "metrics.json").write_text(json.dumps(ev.metrics_dict(), indent=2) + "\n",
                                          encoding="utf-8")
        names.append("metrics.json")
        names.append(_write_per_class(ev, out / "per_class.csv").name)
        names.append(_write_confusion(ev, out / "confusion_matrix.csv").name)
        names.append(_write_top_confusions(ev, out / "top_confusions.csv").name)
        names.append(_write_reliability(ev, out / "reliability.csv").name)
        names.append(_write_smooth_reliability(ev, out / "reliability_smooth.csv").name)
        names.append(_write_risk_coverage(ev, out / "risk_coverage.csv").name)
        if renderer is not None:
            names += renderer(ev, out)
    return [folder / name for name in names]


def _prediction_columns(ev: Evaluation) -> tuple[list[str], list[str]]:
    """predictions.csv's probability columns: (header, the methods whose probabilities
    they hold), raw then scaled, then the chosen recalibrator's when it is not the
    temperature."""
    names = ev.class_names
    columns = ["none", "temperature"]
    header = [f"p_{n}" for n in names] + [f"q_{n}" for n in names]
    if ev.recalibration != "temperature":  # the chosen recalibrator's, to check it by
        columns.append(ev.recalibration)
        header += [f"r_{n}" for n in names]
    return header, columns


def _write_predictions(ev: Evaluation, path: Path) -> Path:
    """One row an image, as the csv module writes it (minimal quoting, CRLF), numbers
    as "%.8g": formatted ``tables.ROWS`` rows at a time in numpy on every core while
    the rest of each row is joined as text here; 200,000 x 165 several times faster than
    the csv module, and in bounded memory."""
    names = ev.class_names
    header, columns = _prediction_columns(ev)
    quoted = [csv_field(n) for n in names]
    n = len(ev.names)
    labels, pred = ev.labels.tolist(), ev.predicted.tolist()
    sets, familiar = ev.prediction_sets, ev.familiarity
    if familiar is not None:
        ood = [f"{f:.8g},{m}" for f, m in zip(familiar.tolist(),
                                              ev.detector.unfamiliar(familiar).tolist(),
                                              strict=True)]
    starts = range(0, n, ROWS)
    # each block's probabilities computed from its logits as it is written
    blocks = (np.concatenate([ev.probabilities(method, slice(at, at + ROWS))
                              for method in columns], axis=1) for at in starts)
    with open(path, "wb") as fh:
        fh.write((",".join(csv_field(h) for h in ["path", "label", "prediction", *header,
                                                   "prediction_set", "familiarity",
                                                   "unfamiliar", "error"])
                  + "\r\n").encode())
        for at, numbers in zip(starts, float_row_blocks(blocks), strict=True):
            stop = min(at + ROWS, n)
            prefix = [f"{csv_field(printable(name))},{quoted[y]},{quoted[p]},".encode()
                      for name, y, p in zip(ev.names[at:stop], labels[at:stop],
                                            pred[at:stop], strict=True)]
            members = _set_members(sets[at:stop], names) if sets is not None else [""] * (
                stop - at)
            marks = ood[at:stop] if familiar is not None else [","] * (stop - at)
            suffix = [f",{m},{o},\r\n".encode() for m, o in zip(members, marks, strict=True)]
            fh.write(b"".join(chain.from_iterable(zip(prefix, numbers, suffix, strict=True))))
        blank = "," * len(header)
        for name, label, sentence in ev.unreadable:
            fh.write((f"{csv_field(printable(name))},{csv_field(label)},{blank},,,,"
                      f"{csv_field(sentence)}\r\n").encode())
    return path


def _set_members(sets: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Each row's prediction set as predictions.csv writes it: its class names joined
    by "|", quoted where the csv module would."""
    rows, classes = np.nonzero(sets)
    ends = np.cumsum(np.bincount(rows, minlength=len(sets))).tolist()
    classes = [names[k] for k in classes.tolist()]
    out, start = [], 0
    for end in ends:
        out.append(csv_field("|".join(classes[start:end])))
        start = end
    return out


def _write_predictions_npz(ev: Evaluation, path: Path) -> Path:
    """predictions.csv's numbers in binary, for numpy and pandas users: the rows of the
    readable images in the same order, the probabilities as float32 (``probs`` raw,
    ``temperature_probs`` scaled and the chosen recalibrator's as ``<method>_probs``),
    ``paths``, ``labels``, ``predicted``, ``class_names``, ``prediction_sets`` (bool)
    and ``familiarity`` / ``unfamiliar`` where the checkpoint has them. ``np.load``
    reads it without pickle."""
    # each array made as it is written (np.savez takes them all at once: 126 MB of
    # float32 a matrix at 200,000 x 165)
    arrays = {"paths": lambda: np.array([printable(n) for n in ev.names], dtype=np.str_),
              "class_names": lambda: np.array(ev.class_names, dtype=np.str_),
              "labels": lambda: ev.labels.astype(np.int32),
              "predicted": lambda: ev.predicted.astype(np.int32),
              "probs": lambda: ev.probabilities("none", dtype=np.float32),
              "temperature_probs": lambda: ev.probabilities("temperature", dtype=np.float32),
              "temperature": lambda: np.float64(ev.temperature)}
    if ev.recalibration != "temperature":
        arrays[f"{ev.recalibration}_probs"] = lambda: ev.probabilities(ev.recalibration,
                                                                       dtype=np.float32)
    if ev.prediction_sets is not None:
        arrays["prediction_sets"] = lambda: ev.prediction_sets.astype(bool)
    if ev.familiarity is not None:
        arrays["familiarity"] = lambda: ev.familiarity.astype(np.float32)
        arrays["unfamiliar"] = lambda: ev.detector.unfamiliar(ev.familiarity).astype(bool)
    # the layout np.savez writes (an uncompressed zip of .npy files), np.load's to read
    with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED,
                                                 allowZip64=True) as archive:
        for name, make in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(make()), allow_pickle=False)
    return path


def _write_per_class(ev: Evaluation, path: Path) -> Path:
    support = np.bincount(ev.labels, minlength=len(ev.class_names))
    intervals = {m: ev.raw.class_intervals(m) for m in CLASS_METRICS}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "support"] + [f"{m}{s}" for m in CLASS_METRICS
                                                for s in ("", "_ci_low", "_ci_high")]
                        + ["set_coverage", "mean_set_size"])
        k = len(ev.class_names)
        coverage, size = (class_coverage(ev.prediction_sets, ev.labels, k)
                          if ev.prediction_sets is not None else ([math.nan] * k,) * 2)
        for c, name in enumerate(ev.class_names):
            row = [name, int(support[c])]
            for m in CLASS_METRICS:
                row += [_cell(ev.raw.class_value[m][c]), *map(_cell, intervals[m][c])]
            writer.writerow(row + [_cell(coverage[c]), _cell(size[c])])
    return path


def _cell(x: float) -> str:
    return f"{x:.6f}" if math.isfinite(x) else ""


def _write_risk_coverage(ev: Evaluation, path: Path) -> Path:
    """The risk-coverage curve of every score: the error rate among the k most confident
    images at coverage k / N (at most CURVE_POINTS rows, evenly spaced, the last k = N)."""
    curves = ev.risk_coverage()
    n = len(ev.labels)
    coverage = next(iter(curves.values()))[0]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["images_answered", "coverage"] + [f"risk_{name}" for name in curves])
        for i, c in enumerate(coverage):
            writer.writerow([int(round(c * n)), f"{c:.6f}"] + [f"{curves[name][1][i]:.6f}"
                                                                for name in curves])
    return path


def _write_confusion(ev: Evaluation, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *ev.class_names])
        for name, row in zip(ev.class_names, ev.confusion(), strict=True):
            writer.writerow([name, *map(int, row)])
    return path


def _write_top_confusions(ev: Evaluation, path: Path) -> Path:
    """Every (true, predicted) pair the test images were confused as, most images first."""
    names = ev.class_names
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "true", "predicted", "count", "share_of_true_class",
                         "share_of_errors"])
        for rank, c in enumerate(ev.top_confusions(), start=1):
            writer.writerow([rank, names[c.true], names[c.predicted], c.count,
                             f"{c.share_of_true:.6f}", f"{c.share_of_errors:.6f}"])
    return path


def reliability_tables(ev: Evaluation) -> tuple[metrics.ReliabilityBins, metrics.ReliabilityBins]:
    """The reliability bins of the raw and the temperature-scaled probabilities."""
    return ev.reliability("none"), ev.reliability("temperature")


def _write_reliability(ev: Evaluation, path: Path) -> Path:
    raw, scaled = reliability_tables(ev)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["bin", "lower", "upper", "count", "accuracy", "confidence",
                         "scaled_count", "scaled_accuracy", "scaled_confidence"])
        for b in range(ev.n_bins):
            writer.writerow([b, f"{raw.edges[b]:.6f}", f"{raw.edges[b + 1]:.6f}",
                             int(raw.counts[b]), _cell(raw.accuracy[b]),
                             _cell(raw.confidence[b]), int(scaled.counts[b]),
                             _cell(scaled.accuracy[b]), _cell(scaled.confidence[b])])
    return path


def _write_smooth_reliability(ev: Evaluation, path: Path) -> Path:
    """The smooth reliability curves (raw and recalibrated) at SMOOTH_POINTS confidences:
    the kernel-smoothed accuracy with its 95 % band (empty where there are too few images
    to speak of) and the density of the confidences, each at the bandwidth of its smooth
    ECE."""
    tables = ev.smooth_tables()
    grid = np.linspace(0.0, 1.0, SMOOTH_POINTS)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["confidence"] + [f"{name}_{col}" for name in tables
                                          for col in ("accuracy", "accuracy_ci_low",
                                                      "accuracy_ci_high", "density")])
        curves = [[np.interp(grid, t.confidence, x) for x in (
            *(np.where(t.supported, y, np.nan) for y in (t.accuracy, *band)), t.density)]
            for t, band in tables.values()]
        for i, c in enumerate(grid):
            writer.writerow([f"{c:.4f}"] + [_cell(x[i]) for pair in curves for x in pair])
    return path


def format_interval(value: float, ci: tuple[float, float]) -> str:
    """'0.912 (0.897–0.925)': a value with its 95 % interval, as the CLI and reports
    print them."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f} ({ci[0]:.4f}–{ci[1]:.4f})"
