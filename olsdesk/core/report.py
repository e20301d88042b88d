"""The messages training yields: ``BatchProgress`` while an epoch runs, ``EpochReport`` after it.

``EpochReport`` is the one payload that flows from the trainer to disk, the panels and
the CLI. It holds plain floats and read-only numpy arrays that nobody mutates.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from olsdesk.errors import first_line

if TYPE_CHECKING:
    from olsdesk.core.records import RunInfo


@dataclass(frozen=True)
class RunStarted:
    """A run is ready to train: its folder, what run.json says, where it starts."""

    path: Path
    info: RunInfo
    start_epoch: int  # epochs already done (non-zero when a run is continued)
    epochs: int


@dataclass(frozen=True)
class BatchProgress:
    """Where an epoch stands; yielded after every batch."""

    epoch: int  # 1-based
    epochs: int
    phase: str  # "train" or "validate"; "compile" (batch 0) before torch.compile's first step
    batch: int  # 1-based, within the phase
    batches: int
    loss: float  # running mean over the epoch so far (train phase)
    images_per_second: float
    elapsed_seconds: float  # since the run (this session of it) started

    @property
    def fraction_of_epoch(self) -> float:
        """0..1 across the training and validation phases (training weighs 80 %)."""
        part = self.batch / max(self.batches, 1)
        return 0.8 + 0.2 * part if self.phase == "validate" else 0.8 * part

    def fraction_of_run(self, start_epoch: int = 0) -> float:
        """0..1 of the epochs this session trains (from ``start_epoch`` on)."""
        span = max(self.epochs - start_epoch, 1)
        return (self.epoch - 1 - start_epoch + self.fraction_of_epoch) / span


def eta_seconds(elapsed: float, fraction_done: float) -> float:
    """Seconds left at the pace so far; NaN until 1 % is done (too early to tell)."""
    if fraction_done <= 0.01:
        return math.nan
    return elapsed * (1 - fraction_done) / fraction_done


def format_duration(seconds: float) -> str:
    """'4:05', '1 h 02 min', or '–' when unknown."""
    if seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60}:{seconds % 60:02d}"


ARRAY_FIELDS = (
    "soft_labels", "mean_prediction",
    "reliability_counts", "reliability_accuracy", "reliability_confidence",
    "confidence_histogram",
    "embedding", "embedding_indices", "embedding_labels", "embedding_predictions",
    "embedding_confidences",
    "smooth_confidence", "smooth_accuracy", "smooth_band", "soft_label_counts",
)
# what a comparison of runs draws of an epoch beyond its scalars: the reliability bins
RELIABILITY_FIELDS = ("reliability_counts", "reliability_accuracy", "reliability_confidence",
                      "confidence_histogram")
SMOOTH_POINTS = 101  # points of the smoothed reliability curve an epoch keeps


@dataclass(frozen=True)
class EpochReport:
    """Everything measured at one epoch's end."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_top1: float
    train_top5: float
    val_top1: float
    val_top5: float
    val_nll: float  # the validation loss: cross-entropy against the hard labels
    val_brier: float
    ece: float
    mce: float
    adaptive_ece: float
    classwise_ece: float
    temperature: float  # temperature-scaling T fitted on this epoch's validation set
    # ECE after scaling, cross-fitted: T fitted on one half of val scores the other half
    ece_temperature_scaled: float
    silhouette: float
    intra_inter_ratio: float
    lr: float
    epoch_seconds: float  # the training and validation passes (not the epoch-end analysis)
    images_per_second: float
    skipped_files: int
    # K x K: the targets the loss trained against this epoch (OLS's S; fixed for the rest)
    soft_labels: np.ndarray = field(repr=False)
    # K x K: row = true class, mean predicted distribution on the validation set
    mean_prediction: np.ndarray = field(repr=False)
    reliability_counts: np.ndarray = field(repr=False)
    reliability_accuracy: np.ndarray = field(repr=False)  # NaN in empty bins
    reliability_confidence: np.ndarray = field(repr=False)  # NaN in empty bins
    confidence_histogram: np.ndarray = field(repr=False)
    embedding: np.ndarray = field(repr=False)  # M x 2, PCA of penultimate features
    embedding_indices: np.ndarray = field(repr=False)  # M, positions in the validation set
    embedding_labels: np.ndarray = field(repr=False)
    embedding_predictions: np.ndarray = field(repr=False)
    embedding_confidences: np.ndarray = field(repr=False)
    class_names: tuple[str, ...] = field(default=(), repr=False)
    # smooth ECE (kernel reliability curve, its own bandwidth) and the debiased L2
    # calibration error; NaN and empty in runs from before olsdesk measured them
    smooth_ece: float = math.nan
    smooth_bandwidth: float = math.nan
    l2_ce_debiased: float = math.nan
    # seconds of this epoch-end analysis (metrics, recalibration, embedding, on its own
    # thread beside the next epoch's training); NaN in runs from before olsdesk measured it
    analysis_seconds: float = math.nan
    smooth_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    smooth_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    smooth_band: np.ndarray = field(default_factory=lambda: np.zeros((2, 0)), repr=False)
    # OLS: how many correct training predictions built each row of soft_labels (0 for
    # the start matrix and for a class that fell back to the uniform row, -1 unknown:
    # resumed from an older checkpoint); empty for the other losses and older runs
    soft_label_counts: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS:
            array = np.array(getattr(self, name), copy=True)
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def mean_confidence(self) -> float:
        """Mean top-label confidence over the validation set, from the reliability bins."""
        total = int(self.reliability_counts.sum())
        if total == 0:
            return math.nan
        return float(np.nansum(self.reliability_confidence * self.reliability_counts) / total)

    def scalars(self) -> dict[str, float | int]:
        """The scalar fields, as written to metrics.jsonl."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ARRAY_FIELDS and f.name != "class_names"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_FIELDS}

    @classmethod
    def from_parts(cls, scalars: dict, arrays: dict, class_names: tuple[str, ...],
                   partial: bool = False) -> EpochReport:
        """A stored epoch; EpochArraysError when its arrays do not fit together or the
        run's classes (a file damaged or from another run: the views would index out of
        them). ``partial``: only some arrays were read (a comparison of runs reads the
        scalars and the reliability bins); the others are empty."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in scalars.items() if k in known}
        values.update({k: arrays[k] for k in ARRAY_FIELDS if k in arrays})
        _check_arrays(values, len(class_names))
        if partial:
            values.update({k: np.zeros(0) for k in ARRAY_FIELDS if k not in values})
        try:
            return cls(**values, class_names=tuple(class_names))
        except TypeError as exc:  # a field missing
            raise EpochArraysError(first_line(exc)) from None


class EpochArraysError(ValueError):
    """An epoch's stored arrays do not fit the run."""


def _check_arrays(values: dict, classes: int) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise EpochArraysError(what)

    for name in ARRAY_FIELDS:
        if name in values:
            array = np.asarray(values[name])
            need(array.dtype.kind in "biuf", f"{name} holds no numbers")
    shape = {name: np.shape(values[name]) for name in ARRAY_FIELDS if name in values}
    for name in ("soft_labels", "mean_prediction"):
        need(shape.get(name, (classes, classes)) == (classes, classes),
             f"{name} is not {classes} x {classes}, one row a class of the run")
    embedded = shape.get("embedding", (0, 2))
    need(len(embedded) == 2 and embedded[1] == 2, "the embedding is not a list of points")
    for name in ("embedding_indices", "embedding_labels", "embedding_predictions",
                 "embedding_confidences"):
        need(shape.get(name, embedded[:1]) == embedded[:1],
             f"{name} does not have one value an embedded point")
    for name in ("embedding_labels", "embedding_predictions"):
        if name in values and np.size(values[name]):
            labels = np.asarray(values[name])
            need(labels.dtype.kind in "iu" and labels.min() >= 0 and labels.max() < classes,
                 f"{name} names classes the run does not have")
    bins = shape.get("reliability_counts", (0,))
    for name in ("reliability_accuracy", "reliability_confidence"):
        need(shape.get(name, bins) == bins, f"{name} does not have one value a bin")
    counts = shape.get("soft_label_counts", (0,))
    need(counts in ((0,), (classes,)), "soft_label_counts does not have one count a class")


def best_report(reports: Sequence[EpochReport]) -> EpochReport | None:
    """The epoch with the best validation Top-1 (the earliest of a tie): best.pt's epoch."""
    best = None
    for report in reports:
        if best is None or report.val_top1 > best.val_top1:
            best = report
    return best


def write_metrics_csv(reports: Sequence[EpochReport], path: str | Path) -> Path:
    """Every epoch's scalars, one row an epoch (as metrics.jsonl, for spreadsheets)."""
    path = Path(path)
    rows = [r.scalars() for r in reports]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_matrix_csv(matrix: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """A class x class matrix with its class names: rows the true class."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true class", *class_names])
        for name, row in zip(class_names, np.asarray(matrix), strict=True):
            writer.writerow([name, *(f"{v:.6f}" for v in row)])
    return path


def write_validation_predictions_csv(report: EpochReport, validation_names: Sequence[str],
                                     class_names: Sequence[str], path: str | Path) -> Path:
    """The epoch's per-image predictions on the validation images it embedded (all of
    them up to the run's embedding sample size), in validation order."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["validation_index", "image", "label", "prediction", "confidence",
                         "correct"])
        for i, label, pred, conf in zip(report.embedding_indices, report.embedding_labels,
                                        report.embedding_predictions,
                                        report.embedding_confidences, strict=True):
            name = validation_names[i] if i < len(validation_names) else ""
            writer.writerow([int(i), name, class_names[int(label)], class_names[int(pred)],
                             f"{float(conf):.6f}", bool(label == pred)])
    return path


def write_run_report_md(path: str | Path, run_name: str, config, info: RunInfo | None,
                        reports: Sequence[EpochReport], shown: EpochReport,
                        figures: Sequence[str], tables: Sequence[str],
                        test_lines: Sequence[str] = ()) -> Path:
    """A short report of a run: the settings it was trained with (the values used, and
    only those its loss and optimiser use), its data, the shown and the best epoch's
    validation metrics, the test evaluation's ``test_lines`` when there is one, then the
    figures and tables written beside it. ``config`` is the run's RunConfig (or None)."""
    best = best_report(reports)
    rows = (("Top-1", "val_top1", "{:.1%}"), ("Top-5", "val_top5", "{:.1%}"),
            ("NLL", "val_nll", "{:.4f}"), ("Brier", "val_brier", "{:.4f}"),
            ("ECE", "ece", "{:.4f}"), ("ECE after temperature scaling",
                                       "ece_temperature_scaled", "{:.4f}"),
            ("adaptive ECE", "adaptive_ece", "{:.4f}"), ("classwise ECE", "classwise_ece",
                                                          "{:.4f}"),
            ("temperature T", "temperature", "{:.3f}"), ("silhouette", "silhouette", "{:.3f}"))
    lines = [f"# {run_name}", ""]
    settings = ("model", "loss", "alpha", "epsilon", "temperature", "ols_init", "epochs", "lr",
                "batch_size", "image_size", "optimizer", "momentum", "weight_decay",
                "schedule", "seed", "data", "split_seed", "val_fraction", "test_fraction")
    if config is not None:
        lines += ["| setting | value |", "|---|---|"]
        lines += [f"| {key} | {config.effective(key)} |" for key in settings
                  if config.uses(key)]
    if info is not None:
        lines += ["", f"**Data**: {info.dataset.describe(len(info.class_names))}; "
                  f"{len(info.class_names)} classes. Every number below is on the validation "
                  "split; `olsdesk evaluate` gives the held-out test split's."]
    if shown is not None:
        head = f"epoch {shown.epoch} (shown)"
        columns = [shown] if best is None or best.epoch == shown.epoch else [shown, best]
        names = [head] + ([f"epoch {best.epoch} (best Top-1)"] if len(columns) > 1 else [])
        lines += ["", f"| metric | {' | '.join(names)} |", "|---|" + "---|" * len(columns)]
        for label, key, fmt in rows:
            values = [getattr(r, key) for r in columns]
            lines.append(f"| {label} | " + " | ".join(
                "—" if not math.isfinite(v) else fmt.format(v) for v in values) + " |")
    if test_lines:
        lines += ["", "## Test split", "", *test_lines]
    if tables:
        lines += ["", "Tables: " + ", ".join(f"[{t}]({t})" for t in tables) + "."]
    for figure in figures:
        lines += ["", f"![{figure}]({figure})"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
