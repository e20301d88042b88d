"""The paper's study on anyone's data: every loss x seed on the same split and schedule.

``Study.run()`` is a generator of the same shape as ``Trainer.fit()``: it trains the
runs one after another into ``OUT/runs/<loss>-s<seed>``, keeps a finished run, resumes
an interrupted one, and yields ``StudyStep``s (which run, and its progress or report).
``olsdesk compare`` and the app's "New comparison" both drive it. ``summarise`` reduces
each run to its final epoch and each loss to the mean and standard deviation over
seeds, with the best loss per metric: the numbers the CLI report, results.csv and the
Compare panel all show. Figures are drawn by a renderer passed in, so this module never
needs Qt; without one the report says the figures were skipped.
"""

from __future__ import annotations

import csv
import math
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olsdesk.config import LOSS_LABELS, RunConfig
from olsdesk.core.report import BatchProgress, EpochReport, RunStarted
from olsdesk.core.runs import LATEST, RunLock, RunStore, ensure_runs_dir

# column, label, higher is better
METRICS = (
    ("val_top1", "Top-1", True),
    ("val_top5", "Top-5", True),
    ("val_nll", "NLL", False),
    ("val_brier", "Brier", False),
    ("ece", "ECE", False),
    ("adaptive_ece", "adaptive ECE", False),
    ("classwise_ece", "classwise ECE", False),
    ("ece_temperature_scaled", "ECE after T-scaling", False),
    ("silhouette", "silhouette", True),
)

# loss -> each seed's reports, in plan order
Histories = dict[str, list[list[EpochReport]]]
# draws the figures of a study into a folder; returns the file names it wrote
FigureRenderer = Callable[[Histories, Path], list[str]]


def run_name(loss: str, seed: int) -> str:
    return f"{loss}-s{seed}"


def plan(base: RunConfig, losses: Sequence[str], seeds: int) -> list[tuple[str, RunConfig]]:
    """(run name, config) for every loss x seed; the split seed stays the same."""
    return [(run_name(loss, s), base.replace(loss=loss, seed=s, alpha=None).validated())
            for loss in losses for s in range(seeds)]


def run_state(path: Path, epochs: int) -> str:
    """'finished', 'resumable' or 'new' for a study's run folder."""
    if not (path / "run.json").exists():
        return "new"
    store = RunStore(path)
    if len(store.metrics()) >= epochs and store.status == "finished":
        return "finished"
    return "resumable" if store.checkpoint_path(LATEST).exists() else "new"


@dataclass(frozen=True)
class StudyStep:
    """One step of a study: run ``index`` of ``total`` and what it yielded: RunStarted
    when a run begins (or continues), then its progress and reports, or the note
    'finished earlier' for a run that is already done."""

    index: int  # 0-based, in plan order
    total: int
    name: str
    item: RunStarted | BatchProgress | EpochReport | str


class Study:
    """Every loss x seed of ``base``, trained into ``out/runs``; resumable."""

    def __init__(self, base: RunConfig, losses: Sequence[str], seeds: int, out: str | Path,
                 dataset=None) -> None:
        self.base = base
        self.losses = list(losses)
        self.seeds = seeds
        self.out = Path(out)
        self.runs = plan(base, self.losses, seeds)
        self.dataset = dataset
        self.stores: list[RunStore] = []
        self.stop_event = threading.Event()
        self.pause_event = threading.Event()
        self.trainer = None  # the run training now
        self.stopped = False

    @property
    def run_paths(self) -> list[Path]:
        return [self.out / "runs" / name for name, _ in self.runs]

    # --- control from other threads, as Trainer's -------------------------------------
    def request_stop(self) -> None:
        self.stop_event.set()
        if self.trainer is not None:
            self.trainer.request_stop()

    def pause(self) -> None:
        self.pause_event.set()
        if self.trainer is not None:
            self.trainer.pause()

    def unpause(self) -> None:
        self.pause_event.clear()
        if self.trainer is not None:
            self.trainer.unpause()

    @property
    def paused(self) -> bool:
        return self.pause_event.is_set()

    def run(self) -> Iterator[StudyStep]:
        """Train every run not finished yet, in plan order; ``stores`` fills as they end."""
        runs_dir = ensure_runs_dir(self.out / "runs")
        lock = RunLock(self.out).acquire()  # one comparison writes this folder at a time
        try:
            yield from self._run(runs_dir)
        finally:
            lock.release()

    def _run(self, runs_dir: Path) -> Iterator[StudyStep]:
        from olsdesk.core.data.sources import open_dataset
        from olsdesk.core.trainer import Trainer

        if self.dataset is None:
            self.dataset = open_dataset(self.base)
        total = len(self.runs)
        self.stores, self.stopped = [], False
        for index, (name, config) in enumerate(self.runs):
            if self.stop_event.is_set():
                break
            path = runs_dir / name
            state = run_state(path, config.epochs)
            if state == "finished":
                self.stores.append(RunStore(path))
                yield StudyStep(index, total, name, "finished earlier")
                continue
            if state == "resumable":
                trainer = Trainer.from_run(path, epochs=config.epochs, dataset=self.dataset)
            else:
                shutil.rmtree(path, ignore_errors=True)
                trainer = Trainer(config, runs_dir=runs_dir, dataset=self.dataset,
                                  run_name=name)
            self.trainer = trainer
            if self.pause_event.is_set():
                trainer.pause()
            yield StudyStep(index, total, name, trainer.started())
            try:
                for item in trainer.fit():
                    yield StudyStep(index, total, name, item)
            finally:
                self.trainer = None
            if trainer.stopped:
                break
            self.stores.append(trainer.store)
        self.stopped = len(self.stores) < total


# --- the summary -------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSummary:
    loss: str
    runs: int
    mean: dict[str, float]
    std: dict[str, float]


@dataclass(frozen=True)
class StudySummary:
    """Per loss, mean ± sd over seeds of each run's final epoch; the best loss per metric."""

    rows: list[LossSummary]
    best: dict[str, str]  # metric -> loss with the best mean

    def reading(self) -> list[str]:
        """Plain sentences about who wins what, and whether the gap exceeds the spread."""
        by_loss = {r.loss: r for r in self.rows}
        lines = []
        for key, label, higher in METRICS:
            if key not in self.best:
                continue
            winner = by_loss[self.best[key]]
            others = [r for r in self.rows if r.loss != winner.loss and not math.isnan(r.mean[key])]
            if not others:
                continue
            second = (max if higher else min)(others, key=lambda r: r.mean[key])
            gap = abs(winner.mean[key] - second.mean[key])
            spread = max(winner.std[key], second.std[key])
            if gap == 0:
                tied = [LOSS_LABELS[r.loss] for r in self.rows if r.mean[key] == winner.mean[key]]
                who = "all losses" if len(tied) == len(self.rows) else ", ".join(tied)
                lines.append(f"{label}: {who} tie at {winner.mean[key]:.4f}.")
                continue
            clear = ("more than twice the larger standard deviation over seeds"
                     if spread > 0 and gap > 2 * spread else "within the spread over seeds")
            lines.append(f"{label}: best {LOSS_LABELS[winner.loss]} ({winner.mean[key]:.4f}), "
                         f"next {LOSS_LABELS[second.loss]} ({second.mean[key]:.4f}); "
                         f"the gap is {clear}.")
        return lines


def best_index(values: Sequence[float], higher: bool) -> int | None:
    """Where the best finite value stands (None when there is none)."""
    finite = [(v, i) for i, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        return None
    return (max if higher else min)(finite)[1]


def best_runs(finals: Sequence[EpochReport]) -> dict[str, int | None]:
    """Metric -> the position of the run with the best final value."""
    return {key: best_index([getattr(f, key) for f in finals], higher)
            for key, _, higher in METRICS}


def summarise(finals: dict[str, list[EpochReport]]) -> StudySummary:
    """Loss -> each seed's final report, reduced to mean ± sd and the best loss per metric."""
    rows = []
    for loss, reports in finals.items():
        mean, std = {}, {}
        for key, _, _ in METRICS:
            values = np.array([getattr(r, key) for r in reports], dtype=float)
            values = values[~np.isnan(values)]  # silhouette is NaN for degenerate embeddings
            mean[key] = float(values.mean()) if values.size else math.nan
            std[key] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(LossSummary(loss, len(reports), mean, std))
    best = {}
    for key, _, higher in METRICS:
        at = best_index([r.mean[key] for r in rows], higher)
        if at is not None:
            best[key] = rows[at].loss
    return StudySummary(rows, best)


def histories_of(stores: Sequence[RunStore]) -> Histories:
    """Loss -> each run's reports, grouped in the order the stores come."""
    histories: Histories = {}
    for store in stores:
        histories.setdefault(store.config().loss, []).append(store.load_reports())
    return histories


def finals_of(histories: Histories) -> dict[str, list[EpochReport]]:
    return {loss: [r[-1] for r in runs if r] for loss, runs in histories.items()}


def seed_band(runs: Sequence[Sequence[EpochReport]], attr: str):
    """(epochs, mean, min, max) of ``attr`` over seeds, over the epochs all runs share."""
    length = min(len(r) for r in runs)
    values = np.array([[getattr(rep, attr) for rep in r[:length]] for r in runs], dtype=float)
    return np.arange(1, length + 1), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


# --- the report --------------------------------------------------------------------------
def write_results_csv(summary: StudySummary, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        header = ["loss", "runs"]
        for key, _, _ in METRICS:
            header += [f"{key}_mean", f"{key}_std", f"{key}_best"]
        writer.writerow(header)
        for r in summary.rows:
            line = [r.loss, r.runs]
            for key, _, _ in METRICS:
                line += [f"{r.mean[key]:.6f}", f"{r.std[key]:.6f}", summary.best.get(key) == r.loss]
            writer.writerow(line)


def write_report_md(summary: StudySummary, base: RunConfig, seeds: int, figures: list[str],
                    path: Path, dataset_line: str, figures_note: str = "") -> None:
    header = "| loss | runs | " + " | ".join(label for _, label, _ in METRICS) + " |"
    rule = "|---|---|" + "---|" * len(METRICS)
    lines = [
        "# Comparison of training objectives", "",
        f"Data: {dataset_line}. Model {base.model}, {base.epochs} epochs, batch "
        f"{base.batch_size}, {base.optimizer} lr {base.lr}, {base.schedule} schedule, image "
        f"size {base.effective_image_size}; {seeds} seed(s) a loss on the same split "
        f"(split seed {base.split_seed}). Validation metrics of each run's final epoch, "
        "mean ± standard deviation over seeds; **bold** is the best mean. ECE after "
        "T-scaling is cross-fitted: T fitted on one half of the validation set scores the "
        "other half.",
        "", header, rule,
    ]
    for r in summary.rows:
        cells = []
        for key, _, _ in METRICS:
            text = f"{r.mean[key]:.4f} ± {r.std[key]:.4f}"
            cells.append(f"**{text}**" if summary.best.get(key) == r.loss else text)
        lines.append(f"| {LOSS_LABELS[r.loss]} | {r.runs} | " + " | ".join(cells) + " |")
    lines += ["", "## What it shows", ""] + [f"- {s}" for s in summary.reading()]
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures] or [figures_note]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_study_report(stores: Sequence[RunStore], base: RunConfig, seeds: int, out: Path,
                       renderer: FigureRenderer | None,
                       figures_note: str = "") -> tuple[list[Path], StudySummary]:
    """report.md, results.csv and (with a renderer) the figures for finished runs."""
    histories = histories_of(stores)
    summary = summarise(finals_of(histories))
    write_results_csv(summary, out / "results.csv")
    figures = renderer(histories, out) if renderer is not None else []
    line = stores[0].info().dataset.describe(len(stores[0].class_names))
    write_report_md(summary, base, seeds, figures, out / "report.md", line, figures_note)
    return [out / "report.md", out / "results.csv", *(out / f for f in figures)], summary
