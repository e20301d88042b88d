"""The paper's study on anyone's data: every loss x seed on the same split and schedule.

``run_comparison`` trains the runs one after another into ``OUT/runs/<loss>-s<seed>``;
a finished run is kept, an interrupted one resumed, so re-running a comparison picks up
where it stopped. ``summarise`` reduces each run to its final epoch and each loss to the
mean and standard deviation over seeds.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olsdesk.config import LOSS_LABELS, RunConfig
from olsdesk.core.report import EpochReport
from olsdesk.core.runs import LATEST, RunStore

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


def run_name(loss: str, seed: int) -> str:
    return f"{loss}-s{seed}"


def plan(base: RunConfig, losses: list[str], seeds: int) -> list[tuple[str, RunConfig]]:
    """(run name, config) for every loss x seed; the split seed stays the same."""
    return [(run_name(loss, s), base.replace(loss=loss, seed=s, alpha=None).validated())
            for loss in losses for s in range(seeds)]


def run_state(path: Path, epochs: int) -> str:
    """'finished', 'resumable' or 'new' for a comparison's run folder."""
    if not (path / "run.json").exists():
        return "new"
    store = RunStore(path)
    if len(store.metrics()) >= epochs and store.info().get("status") == "finished":
        return "finished"
    return "resumable" if store.checkpoint_path(LATEST).exists() else "new"


def run_comparison(base: RunConfig, losses: list[str], seeds: int, out: str | Path,
                   on_item: Callable[[str, int, int, object], None] | None = None,
                   dataset=None) -> list[RunStore]:
    """Train every run not finished yet; returns the stores in plan order."""
    from olsdesk.core.data.sources import open_dataset
    from olsdesk.core.trainer import Trainer

    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = plan(base, losses, seeds)
    if dataset is None:
        dataset = open_dataset(base.data, split_csv=base.split_csv,
                               val_fraction=base.val_fraction, split_seed=base.split_seed,
                               demo_per_class=base.demo_per_class,
                               max_side=base.effective_image_size * 2)
    stores = []
    for index, (name, config) in enumerate(todo):
        path = runs_dir / name
        state = run_state(path, config.epochs)
        if state == "finished":
            stores.append(RunStore(path))
            if on_item:
                on_item(name, index, len(todo), "finished earlier")
            continue
        if state == "resumable":
            trainer = Trainer.resume(path, epochs=config.epochs, dataset=dataset)
        else:
            shutil.rmtree(path, ignore_errors=True)
            trainer = Trainer(config, runs_dir=runs_dir, dataset=dataset, run_name=name)
        for item in trainer.fit():
            if on_item:
                on_item(name, index, len(todo), item)
        stores.append(trainer.store)
    return stores


@dataclass(frozen=True)
class LossSummary:
    loss: str
    runs: int
    mean: dict[str, float]
    std: dict[str, float]


def summarise(finals: dict[str, list[EpochReport]]) -> list[LossSummary]:
    rows = []
    for loss, reports in finals.items():
        mean, std = {}, {}
        for key, _, _ in METRICS:
            values = np.array([getattr(r, key) for r in reports], dtype=float)
            values = values[~np.isnan(values)]  # silhouette is NaN for degenerate embeddings
            mean[key] = float(values.mean()) if values.size else math.nan
            std[key] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows.append(LossSummary(loss, len(reports), mean, std))
    return rows


def best_losses(rows: list[LossSummary]) -> dict[str, str]:
    """Metric -> the loss with the best mean."""
    best = {}
    for key, _, higher in METRICS:
        scored = [(r.mean[key], r.loss) for r in rows if not math.isnan(r.mean[key])]
        if scored:
            best[key] = (max if higher else min)(scored)[1]
    return best


def write_results_csv(rows: list[LossSummary], path: Path) -> None:
    best = best_losses(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        header = ["loss", "runs"]
        for key, _, _ in METRICS:
            header += [f"{key}_mean", f"{key}_std", f"{key}_best"]
        writer.writerow(header)
        for r in rows:
            line = [r.loss, r.runs]
            for key, _, _ in METRICS:
                line += [f"{r.mean[key]:.6f}", f"{r.std[key]:.6f}", best.get(key) == r.loss]
            writer.writerow(line)


def reading(rows: list[LossSummary]) -> list[str]:
    """Plain sentences about who wins what, and whether the gap exceeds the spread."""
    best = best_losses(rows)
    by_loss = {r.loss: r for r in rows}
    lines = []
    for key, label, higher in METRICS:
        if key not in best:
            continue
        winner = by_loss[best[key]]
        others = [r for r in rows if r.loss != winner.loss and not math.isnan(r.mean[key])]
        if not others:
            continue
        second = (max if higher else min)(others, key=lambda r: r.mean[key])
        gap = abs(winner.mean[key] - second.mean[key])
        spread = max(winner.std[key], second.std[key])
        if gap == 0:
            tied = [LOSS_LABELS[r.loss] for r in rows if r.mean[key] == winner.mean[key]]
            who = "all losses" if len(tied) == len(rows) else ", ".join(tied)
            lines.append(f"{label}: {who} tie at {winner.mean[key]:.4f}.")
            continue
        clear = ("more than twice the larger standard deviation over seeds"
                 if spread > 0 and gap > 2 * spread else "within the spread over seeds")
        lines.append(f"{label}: best {LOSS_LABELS[winner.loss]} ({winner.mean[key]:.4f}), "
                     f"next {LOSS_LABELS[second.loss]} ({second.mean[key]:.4f}); "
                     f"the gap is {clear}.")
    return lines


def write_report(rows: list[LossSummary], base: RunConfig, seeds: int, figures: list[str],
                 path: Path, dataset_line: str) -> None:
    best = best_losses(rows)
    header = "| loss | runs | " + " | ".join(label for _, label, _ in METRICS) + " |"
    rule = "|---|---|" + "---|" * len(METRICS)
    lines = [
        "# Comparison of training objectives", "",
        f"Data: {dataset_line}. Model {base.model}, {base.epochs} epochs, batch "
        f"{base.batch_size}, {base.optimizer} lr {base.lr}, {base.schedule} schedule, image "
        f"size {base.effective_image_size}; {seeds} seed(s) a loss on the same split "
        f"(split seed {base.split_seed}). Validation metrics of each run's final epoch, "
        "mean ± standard deviation over seeds; **bold** is the best mean. ECE after "
        "T-scaling fits the temperature on the same validation set (in-sample, optimistic).",
        "", header, rule,
    ]
    by_loss = {r.loss: r for r in rows}
    for r in rows:
        cells = []
        for key, _, _ in METRICS:
            text = f"{r.mean[key]:.4f} ± {r.std[key]:.4f}"
            top = by_loss[best[key]].mean[key] if key in best else None
            cells.append(f"**{text}**" if top is not None and r.mean[key] == top else text)
        lines.append(f"| {LOSS_LABELS[r.loss]} | {r.runs} | " + " | ".join(cells) + " |")
    lines += ["", "## What it shows", ""] + [f"- {s}" for s in reading(rows)]
    lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

