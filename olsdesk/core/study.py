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
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olsdesk.config import DEFAULT_ALPHA, LOSS_LABELS, RunConfig
from olsdesk.core.control import Controlled, JobControl
from olsdesk.core.outputs import output_folder
from olsdesk.core.report import BatchProgress, EpochReport, RunStarted
from olsdesk.core.runs import LATEST, RunLock, RunStore, ensure_runs_dir
from olsdesk.errors import RunError, first_line, printable

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
# draws the figures of a study (and its test comparison, if any) into a folder; returns
# the file names it wrote
FigureRenderer = Callable[[Histories, Path, "TestComparison | None"], list[str]]


# an arm of a study: a loss, or a loss at one value of its α (OLS, TF-KD) or ε (LS) when
# the study has that axis, and with a remedy for imbalance when it has that one: "ols",
# "ols-a0.3", "ls-e0.05", "ce-balanced", "ols-a0.3-weighted"
ARM = re.compile(r"^(?P<loss>[a-z]+)(?:-(?P<axis>[ae])(?P<value>[0-9.]+))?"
                 r"(?:-(?P<imbalance>balanced|weighted))?$")
# the imbalance axis: none, a class-balanced sampler, inverse-frequency class weights
IMBALANCE = {"none": {}, "balanced": {"sampling": "balanced"},
             "weighted": {"class_weights": True}}
IMBALANCE_LABELS = {"balanced": "class-balanced sampling", "weighted": "class weights"}
RUN = re.compile(r"^(?P<arm>.+)-s[0-9]+$")


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def arm_label(arm: str) -> str:
    """An arm in words: 'online label smoothing α=0.3'; anything else as it is."""
    match = ARM.match(arm)
    if match is None or match["loss"] not in LOSS_LABELS:
        return arm
    label = LOSS_LABELS[match["loss"]]
    if match["axis"]:
        label += f" {'α' if match['axis'] == 'a' else 'ε'}={match['value']}"
    if match["imbalance"]:
        label += f", {IMBALANCE_LABELS[match['imbalance']]}"
    return label


def arms(base: RunConfig, losses: Sequence[str], alphas: Sequence[float] = (),
         epsilons: Sequence[float] = (), imbalance: Sequence[str] = ()
         ) -> list[tuple[str, RunConfig]]:
    """(arm, config before the seed) for every loss, and every α of ``alphas`` for OLS
    and TF-KD, every ε of ``epsilons`` for label smoothing, each under every remedy of
    ``imbalance`` (IMBALANCE's names; "none" keeps the arm's plain name). Without an axis
    the α set in ``base`` is for ``base.loss`` (OLS's hard-label weight is not TF-KD's
    teacher weight): other losses take their own default."""
    plain = _loss_arms(base, losses, alphas, epsilons)
    if not imbalance:
        return plain
    return [(arm if remedy == "none" else f"{arm}-{remedy}",
             config.replace(**{"sampling": "natural", "class_weights": False,
                               **IMBALANCE[remedy]}))
            for arm, config in plain for remedy in imbalance]


def _loss_arms(base, losses, alphas, epsilons) -> list[tuple[str, RunConfig]]:
    out = []
    for loss in losses:
        if alphas and loss in DEFAULT_ALPHA:
            out += [(f"{loss}-a{a:g}", base.replace(loss=loss, alpha=a)) for a in alphas]
        elif epsilons and loss == "ls":
            out += [(f"ls-e{e:g}", base.replace(loss=loss, epsilon=e)) for e in epsilons]
        else:
            out.append((loss, base.replace(
                loss=loss, alpha=base.alpha if loss == base.loss else None)))
    return out


def plan(base: RunConfig, losses: Sequence[str], seeds: int, alphas: Sequence[float] = (),
         epsilons: Sequence[float] = (), imbalance: Sequence[str] = ()
         ) -> list[tuple[str, RunConfig]]:
    """(run name, config) for every arm x seed; the split seed stays the same."""
    return [(run_name(arm, s), config.replace(seed=s).validated())
            for arm, config in arms(base, losses, alphas, epsilons, imbalance)
            for s in range(seeds)]


def arm_of(path: Path, loss: str) -> str:
    """The arm a study's run belongs to (its folder's name less the seed); the loss for
    a run not named by a study."""
    match = RUN.match(path.name)
    arm = ARM.match(match["arm"]) if match else None
    return match["arm"] if arm is not None and arm["loss"] == loss else loss


# settings a study's run may change when it is continued: a new total of epochs, and
# how the machine runs it (not what it computes)
CONTINUE_MAY_CHANGE = {"epochs", "num_workers", "device", "compile",
                       "device_preprocessing"}


def settings_changed(stored: RunConfig, planned: RunConfig) -> list[str]:
    """'lr 0.003 (now 0.5)' for every setting in which a study's existing run differs
    from what the study plans for it, those a continued run may change left out."""
    old, new = stored.to_dict(), planned.to_dict()
    return [f"{key} {old.get(key)!r} (now {new[key]!r})" for key in new
            if key not in CONTINUE_MAY_CHANGE and old.get(key) != new[key]]


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


class Study(Controlled):
    """Every arm (loss, or loss at an α or ε) x seed of ``base``, trained into
    ``out/runs``; resumable."""

    def __init__(self, base: RunConfig, losses: Sequence[str], seeds: int, out: str | Path,
                 dataset=None, alphas: Sequence[float] = (),
                 epsilons: Sequence[float] = (), imbalance: Sequence[str] = ()) -> None:
        self.base = base
        self.losses = list(losses)
        self.seeds = seeds
        self.out = Path(out)
        self.runs = plan(base, self.losses, seeds, alphas, epsilons, imbalance)
        self.dataset = dataset
        self.stores: list[RunStore] = []
        self.control = JobControl()  # shared with each run's trainer: no stop is lost
        self.trainer = None  # the run training now
        self.stopped = False
        self.test: TestComparison | None = None  # set by score_on_test
        self.histories: Histories | None = None  # set by load_results
        self.dataset_line: str | None = None

    @property
    def run_paths(self) -> list[Path]:
        return [self.out / "runs" / name for name, _ in self.runs]

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
        self._refuse_other_settings(runs_dir)
        total = len(self.runs)
        self.stores, self.stopped, self.histories = [], False, None
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
                trainer = Trainer.from_run(path, epochs=config.epochs, dataset=self.dataset,
                                           control=self.control)
            else:
                shutil.rmtree(path, ignore_errors=True)
                trainer = Trainer(config, runs_dir=runs_dir, dataset=self.dataset,
                                  run_name=name, control=self.control)
            if self.stop_event.is_set():  # asked for while this run was being set up
                trainer.close()
                break
            self.trainer = trainer
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


    def _refuse_other_settings(self, runs_dir: Path) -> None:
        """RunError before anything trains when a run already in the folder was trained
        with other settings or on other classes than this study plans for it: reusing
        it would publish another experiment's numbers under this one's name."""
        found = []
        for name, config in self.runs:
            path = runs_dir / name
            if run_state(path, config.epochs) == "new":
                continue
            store = RunStore(path)
            try:
                stored, classes = store.config(), store.info().class_names
            except Exception as exc:  # noqa: BLE001 - a damaged run is its own sentence
                raise RunError(f"{printable(path)} is damaged ({first_line(exc)}); remove it "
                               "or choose another folder.") from None
            changed = settings_changed(stored, config)
            if classes != self.dataset.class_names:
                changed.insert(0, f"classes ({len(classes)} then, {self.dataset.num_classes} "
                               "in the data now)")
            if changed:
                found.append((name, changed))
        if found:
            name, changed = found[0]
            raise RunError(
                f"{printable(self.out)} already holds runs of another experiment "
                f"({len(found)} of {len(self.runs)}; {name}: {'; '.join(changed[:4])}). "
                "Give another --out for these settings, or the same settings to continue "
                "that study.")

    def score_on_test(self, resamples: int = 1000,
                      progress: Callable[[int, int], None] | None = None
                      ) -> TestComparison | None:
        """Every finished run's best checkpoint on the test split, paired against hard
        labels (None without a test split); ``olsdesk compare`` and the app's New
        comparison both end with this, then ``write_study_report``."""
        self.test = compare_on_test(self.stores, self.dataset, resamples=resamples,
                                    device=self.base.device, progress=progress)
        return self.test

    def load_results(self) -> Histories:
        """Read every finished run's epochs (once; the app does it in its worker, so the
        report is then written without reading a run folder on the GUI thread)."""
        if self.histories is None:
            self.histories = histories_of(self.stores)
            self.dataset_line = dataset_line(self.stores)
        return self.histories

    def write_report(self, renderer: FigureRenderer | None, figures_note: str = ""
                     ) -> list[Path]:
        """report.md, results.csv, test_results.csv and the figures, into ``out``."""
        return write_study_report(self.stores, self.base, self.seeds, self.out, renderer,
                                  figures_note, self.test, self.load_results(),
                                  self.dataset_line)[0]


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

    def is_best(self, key: str, loss: str) -> bool:
        """``loss`` has the best mean of ``key``, alone or tied with others."""
        if key not in self.best:
            return False
        by_loss = {r.loss: r for r in self.rows}
        return by_loss[loss].mean[key] == by_loss[self.best[key]].mean[key]

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
                tied = [arm_label(r.loss) for r in self.rows if r.mean[key] == winner.mean[key]]
                who = "all losses" if len(tied) == len(self.rows) else ", ".join(tied)
                lines.append(f"{label}: {who} tie at {winner.mean[key]:.4f}.")
                continue
            if min(winner.runs, second.runs) < 2:
                clear = "not weighed against a spread: one run each, so no spread over seeds"
            elif spread > 0 and gap > 2 * spread:
                clear = "more than twice the larger standard deviation over seeds"
            else:
                clear = "within the spread over seeds"
            lines.append(f"{label}: best {arm_label(winner.loss)} ({winner.mean[key]:.4f}), "
                         f"next {arm_label(second.loss)} ({second.mean[key]:.4f}); "
                         f"the gap is {clear}.")
        return lines


def best_index(values: Sequence[float], higher: bool) -> int | None:
    """Where the best finite value stands (None when there is none)."""
    finite = [(v, i) for i, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        return None
    return (max if higher else min)(finite)[1]


def tied_best(values: Sequence[float], higher: bool) -> set[int]:
    """Every position holding the best finite value (several when they tie)."""
    at = best_index(values, higher)
    return set() if at is None else {i for i, v in enumerate(values) if v == values[at]}


def best_runs(finals: Sequence[EpochReport]) -> dict[str, set[int]]:
    """Metric -> the positions of the runs with the best final value (all of a tie)."""
    return {key: tied_best([getattr(f, key) for f in finals], higher)
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


def dataset_line(stores: Sequence[RunStore]) -> str:
    """The data the runs were trained on, in words (from the first run's run.json)."""
    info = stores[0].info()
    return info.dataset.describe(len(info.class_names))


def histories_of(stores: Sequence[RunStore]) -> Histories:
    """Arm -> each run's reports, grouped in the order the stores come."""
    histories: Histories = {}
    for store in stores:
        histories.setdefault(arm_of(store.path, store.config().loss), []).append(store.load_reports())
    return histories


def finals_of(histories: Histories) -> dict[str, list[EpochReport]]:
    return {loss: [r[-1] for r in runs if r] for loss, runs in histories.items()}


def seed_band(runs: Sequence[Sequence[EpochReport]], attr: str):
    """(epochs, mean, min, max) of ``attr`` over seeds, over the epochs all runs share."""
    length = min(len(r) for r in runs)
    values = np.array([[getattr(rep, attr) for rep in r[:length]] for r in runs], dtype=float)
    return np.arange(1, length + 1), values.mean(axis=0), values.min(axis=0), values.max(axis=0)


# --- the test split ----------------------------------------------------------------------
# key, label, higher is better: the metrics each run's best checkpoint gets on test
TEST_METRICS = (
    ("top1", "Top-1", True),
    ("top5", "Top-5", True),
    ("nll", "NLL", False),
    ("brier", "Brier", False),
    ("ece", "ECE", False),
    ("adaptive_ece", "adaptive ECE", False),
    ("classwise_ece", "classwise ECE", False),
    ("ece_scaled", "ECE after T-scaling", False),
    ("macro_auroc", "macro AUROC", True),
    ("balanced_accuracy", "balanced accuracy", True),
    ("smooth_ece", "smooth ECE", False),
    ("smooth_ece_scaled", "smooth ECE after T-scaling", False),
    ("l2_ce_debiased", "debiased L2 CE", False),
    ("aurc", "AURC", False),
    ("eaurc", "E-AURC", False),
    ("eaurc_scaled", "E-AURC after T-scaling", False),
    # split-conformal sets calibrated on validation: coverage has a target, not a direction
    ("set_coverage", "set coverage", None),
    ("mean_set_size", "mean set size", False),
)
CONFORMAL_METRICS = ("set_coverage", "mean_set_size")  # columns of conformal_samples
BASELINE = "ce"
Interval = tuple[float, float, float]  # value, 95 % low, 95 % high


@dataclass(frozen=True)
class TestComparison:
    """Each loss's test metrics pooled over seeds, and its paired difference to hard labels.

    Every run's best checkpoint is scored on the same test images and the same bootstrap
    resamples of them; a loss's value on a resample is the mean over its seeds, and its
    difference to hard labels is taken resample by resample (a paired bootstrap), so the
    interval of a difference reflects only what differs between the two losses."""

    source: str
    n_images: int
    resamples: int
    values: dict[str, dict[str, Interval]]  # loss -> metric -> (value, lo, hi)
    differences: dict[str, dict[str, Interval]]  # loss -> metric -> loss minus hard labels
    # loss -> (coverage, selective risk of the raw top-1 probability, mean over seeds)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    sets: str = ""  # the conformal sets scored, in words ("RAPS at 90 %")

    def significant(self, loss: str, key: str) -> bool:
        """True when the difference's 95 % interval excludes 0."""
        _, lo, hi = self.differences[loss][key]
        return lo > 0 or hi < 0

    def reading(self) -> list[str]:
        """One sentence a metric: which losses differ from hard labels, and which way."""
        lines = []
        for key, label, higher in TEST_METRICS:
            better, worse, same = [], [], []
            for loss, diffs in self.differences.items():
                value, lo, hi = diffs[key]
                if not math.isfinite(value):
                    continue
                text = f"{arm_label(loss)} {value:+.4f} ({lo:+.4f} to {hi:+.4f})"
                if not self.significant(loss, key):
                    same.append(text)
                elif (value > 0) == (higher is None or higher):
                    better.append(text)
                else:
                    worse.append(text)
            parts = []
            up, down = (("higher than hard labels", "lower") if higher is None else
                        ("better than hard labels", "worse"))
            if better:
                parts.append(f"{up}: " + "; ".join(better))
            if worse:
                parts.append(f"{down}: " + "; ".join(worse))
            if same:
                parts.append("no difference the test set can show: " + "; ".join(same))
            if parts:
                lines.append(f"{label}: " + ". ".join(parts) + ".")
        return lines


def compare_on_test(stores: Sequence[RunStore], dataset, resamples: int = 1000,
                    seed: int = 0, device: str = "auto",
                    progress: Callable[[int, int], None] | None = None
                    ) -> TestComparison | None:
    """Score every run's best checkpoint on ``dataset``'s test split (None without one)."""
    from olsdesk.core.bootstrap import interval, percentile_ci
    from olsdesk.core.conformal import covered_and_size
    from olsdesk.core.evaluation import evaluate

    if dataset is None or dataset.test is None or not stores:
        return None
    per_loss: dict[str, list] = {}
    for i, store in enumerate(stores):
        checkpoint = store.checkpoint_path("best.pt")
        if not checkpoint.exists():
            continue
        ev = evaluate(checkpoint, device=device, resamples=resamples, seed=seed,
                      test=(dataset.test, dataset.test_source or "the test split"))
        per_loss.setdefault(arm_of(store.path, store.config().loss), []).append(ev)
        if progress is not None:
            progress(i + 1, len(stores))
    if not per_loss:
        return None

    def pooled(evs, key):
        """(value, per-resample values): the mean over seeds (NaN where a checkpoint holds
        no conformal calibration)."""
        if key in CONFORMAL_METRICS:
            if any(e.conformal is None for e in evs):
                return float("nan"), np.full(resamples, np.nan)
            column = CONFORMAL_METRICS.index(key)
            return (float(np.mean([np.mean(covered_and_size(e.prediction_sets, e.labels)
                                           [column]) for e in evs])),
                    np.mean([e.conformal_samples[:, column] for e in evs], axis=0))
        result, name = (("scaled", key.removesuffix("_scaled")) if key.endswith("_scaled")
                        else ("raw", key))
        return (float(np.mean([getattr(e, result).value[name] for e in evs])),
                np.mean([getattr(e, result).summary[name] for e in evs], axis=0))

    # each loss pooled once; the differences reuse the baseline's pooled resamples
    pools = {loss: {key: pooled(evs, key) for key, _, _ in TEST_METRICS}
             for loss, evs in per_loss.items()}
    # a calibration error's interval is centred on its value (bootstrap.interval)
    values = {loss: {key: (value, *interval(key.removesuffix("_scaled"), value, samples))
                     for key, (value, samples) in pool.items()}
              for loss, pool in pools.items()}
    differences = {}
    if BASELINE in pools:
        base = pools[BASELINE]
        differences = {loss: {key: (value - base[key][0],
                                    *percentile_ci(samples - base[key][1]))
                              for key, (value, samples) in pool.items()}
                       for loss, pool in pools.items() if loss != BASELINE}
    first = next(iter(per_loss.values()))[0]
    curves = {loss: pooled_curve(evs) for loss, evs in per_loss.items()}
    sets = next((e.conformal for evs in per_loss.values() for e in evs if e.conformal), None)
    return TestComparison(first.source, len(first.labels), resamples, values, differences,
                          curves, "" if sets is None else
                          f"{sets.method.upper()} at {sets.coverage:.0%}")


def pooled_curve(evs) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, selective risk) of the raw top-1 probability, averaged over seeds at each
    k (every seed scores the same test images, so the same k)."""
    curves = [e.risk_coverage()["raw"] for e in evs]
    return curves[0][0], np.mean([risk for _, risk in curves], axis=0)


def write_risk_coverage_csv(comparison: TestComparison, path: Path) -> None:
    """risk_coverage.csv of a study: per loss, the seeds' mean selective risk at each
    coverage, ranking by the raw top-1 probability."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["loss", "coverage", "selective_risk"])
        for loss, (coverage, risk) in comparison.curves.items():
            writer.writerows([loss, f"{c:.6f}", f"{r:.6f}"]
                             for c, r in zip(coverage, risk, strict=True))


def study_folder_of(checkpoint: str | Path) -> Path | None:
    """The study folder a run's checkpoint belongs to (OUT of OUT/runs/<run>/checkpoints/
    x.pt), when that study has been scored on test; else None."""
    parents = Path(checkpoint).parents
    if len(parents) < 4 or parents[2].name != "runs":
        return None
    folder = parents[3]
    return folder if all((folder / name).is_file() for name in
                         ("test_results.csv", "risk_coverage.csv")) else None


def read_test_comparison(folder: str | Path) -> TestComparison | None:
    """A scored study's comparison from its test_results.csv and risk_coverage.csv (what
    the app draws of a study it did not run itself); None when the files are missing or
    not a study's. The number of images is the curve's (its first point is k = 1); the
    resamples are not in the files (0)."""
    folder = Path(folder)
    values: dict[str, dict[str, Interval]] = {}
    differences: dict[str, dict[str, Interval]] = {}
    curves: dict[str, tuple[list, list]] = {}
    try:
        with open(folder / "test_results.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                triple = tuple(float(row[k]) for k in ("value", "ci_low", "ci_high"))
                values.setdefault(row["loss"], {})[row["metric"]] = triple
                if row["minus_ce"]:
                    differences.setdefault(row["loss"], {})[row["metric"]] = tuple(
                        float(row[k]) for k in ("minus_ce", "minus_ce_ci_low",
                                                "minus_ce_ci_high"))
        with open(folder / "risk_coverage.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                coverage, risk = curves.setdefault(row["loss"], ([], []))
                coverage.append(float(row["coverage"]))
                risk.append(float(row["selective_risk"]))
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None
    arrays = {loss: (np.array(c), np.array(r)) for loss, (c, r) in curves.items()
              if loss in values and "aurc" in values[loss] and c}
    if not arrays:
        return None
    n_images = int(round(1.0 / next(iter(arrays.values()))[0][0]))
    return TestComparison(str(folder), n_images, 0, values, differences, arrays)


TEST_HEADER = ["loss", "metric", "value", "ci_low", "ci_high", "minus_ce", "minus_ce_ci_low",
               "minus_ce_ci_high", "significant"]


def test_rows(comparison: TestComparison) -> list[list]:
    """test_results.csv's rows: one per loss and metric, with the paired difference to CE."""
    rows = []
    for loss, metrics in comparison.values.items():
        for key, _, _ in TEST_METRICS:
            diff = comparison.differences.get(loss, {}).get(key)
            rows.append([loss, key, *(f"{x:.6f}" for x in metrics[key])]
                        + ([*(f"{x:.6f}" for x in diff), comparison.significant(loss, key)]
                           if diff else ["", "", "", ""]))
    return rows


def write_test_csv(comparison: TestComparison, path: Path) -> None:
    """test_results.csv: a row per loss and metric, with the paired difference to CE."""
    _write_csv(path, TEST_HEADER, test_rows(comparison))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def test_section(comparison: TestComparison) -> list[str]:
    """report.md's test-split tables (a row a metric, a column a loss) and reading."""

    def table(losses) -> list[str]:
        return ["| metric | " + " | ".join(arm_label(loss) for loss in losses) + " |",
                "|---|" + "---|" * len(losses)]

    sets = (f" Sets: split-conformal {comparison.sets} target coverage, calibrated on "
            "validation." if comparison.sets else "")
    lines = ["## On the test split", "",
             f"Each run's best checkpoint (highest validation Top-1) on {comparison.n_images} "
             f"test images ({comparison.source}) that no run saw in training or model "
             "selection. Value: mean over seeds; in brackets its 95 % interval from "
             f"{comparison.resamples} bootstrap resamples of the test images (for a "
             "calibration error, centred on the value). The temperature is fitted on "
             f"validation.{sets}", "", *table(comparison.values)]
    for key, label, _ in TEST_METRICS:
        cells = [f"{v:.4f} ({lo:.4f}–{hi:.4f})" for v, lo, hi in
                 (metrics[key] for metrics in comparison.values.values())]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if comparison.differences:
        lines += ["", "Difference to hard labels (CE), paired over the same test images and "
                  "resamples; **bold** where the 95 % interval excludes 0.", "",
                  *table(comparison.differences)]
        for key, label, _ in TEST_METRICS:
            cells = []
            for loss, diffs in comparison.differences.items():
                v, lo, hi = diffs[key]
                text = f"{v:+.4f} ({lo:+.4f} to {hi:+.4f})"
                cells.append(f"**{text}**" if comparison.significant(loss, key) else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "### What the test split shows", ""]
        lines += [f"- {s}" for s in comparison.reading()]
    return lines + [""]


# --- the report --------------------------------------------------------------------------
RESULTS_HEADER = ["loss", "runs"] + [f"{key}_{part}" for key, _, _ in METRICS
                                     for part in ("mean", "std", "best")]


def results_rows(summary: StudySummary) -> list[list]:
    """results.csv's rows: one per loss, each metric's mean, sd and whether it is best."""
    rows = []
    for r in summary.rows:
        line = [r.loss, r.runs]
        for key, _, _ in METRICS:
            line += [f"{r.mean[key]:.6f}", f"{r.std[key]:.6f}", summary.is_best(key, r.loss)]
        rows.append(line)
    return rows


def write_results_csv(summary: StudySummary, path: Path) -> None:
    _write_csv(path, RESULTS_HEADER, results_rows(summary))


def write_report_md(summary: StudySummary, base: RunConfig, seeds: int, figures: list[str],
                    path: Path, dataset_line: str, figures_note: str = "",
                    test: TestComparison | None = None) -> None:
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
            cells.append(f"**{text}**" if summary.is_best(key, r.loss) else text)
        lines.append(f"| {arm_label(r.loss)} | {r.runs} | " + " | ".join(cells) + " |")
    lines += ["", "## What validation shows", ""] + [f"- {s}" for s in summary.reading()]
    lines += [""] + (test_section(test) if test is not None else [
        "No test split: these are validation numbers, which also chose the checkpoints; "
        "hold out a test split (--test-fraction) or give --test-data for numbers a "
        "reviewer would accept.", ""])
    lines += ["## Figures", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures] or [figures_note]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_study_report(stores: Sequence[RunStore], base: RunConfig, seeds: int, out: Path,
                       renderer: FigureRenderer | None, figures_note: str = "",
                       test: TestComparison | None = None,
                       histories: Histories | None = None, line: str | None = None
                       ) -> tuple[list[Path], StudySummary]:
    """report.md, results.csv, test_results.csv (with a test comparison) and (with a
    renderer) the figures for finished runs (``histories``: their epochs, read already)."""
    histories = histories_of(stores) if histories is None else histories
    summary = summarise(finals_of(histories))
    line = dataset_line(stores) if line is None else line
    names = ["report.md", "results.csv"]
    with output_folder(out) as staging:  # all of them or none: never half a report
        write_results_csv(summary, staging / "results.csv")
        if test is not None:
            write_test_csv(test, staging / "test_results.csv")
            write_risk_coverage_csv(test, staging / "risk_coverage.csv")
            names += ["test_results.csv", "risk_coverage.csv"]
        figures = renderer(histories, staging, test) if renderer is not None else []
        write_report_md(summary, base, seeds, figures, staging / "report.md", line,
                        figures_note, test)
    return [Path(out) / f for f in names + list(figures)], summary


# --- several models: the paper's table ------------------------------------------------------
# test metrics the table shows, each with its paired difference to hard labels
TABLE_METRICS = ("top1", "nll", "ece", "ece_scaled", "aurc", "mean_set_size")


def write_models_report(out: Path, studies: Sequence[Study], seeds: int) -> list[Path]:
    """report.md, results.csv and test_results.csv in ``out`` over one study a model
    (each in ``out/<model>`` with its own full report): a row a model and arm, each
    model's differences paired against its own hard-label runs."""
    out = Path(out)
    results, tests, table = [], [], []
    for st in studies:
        model = st.base.model
        summary = summarise(finals_of(st.load_results()))
        results += [[model, *row] for row in results_rows(summary)]
        if st.test is not None:
            tests += [[model, *row] for row in test_rows(st.test)]
        table += _model_rows(model, summary, st.test)
    names = ["report.md", "results.csv"] + (["test_results.csv"] if tests else [])
    scored = all(st.test is not None for st in studies)
    labels = dict((key, label) for key, label, _ in TEST_METRICS)
    first = studies[0]
    lines = [
        f"# Comparison of training objectives on {len(studies)} models", "",
        f"Data: {first.dataset_line or dataset_line(first.stores)}. Models "
        f"{', '.join(st.base.model for st in studies)}; {first.base.epochs} epochs, "
        f"{first.base.optimizer} lr {first.base.lr}, {first.base.schedule} schedule; {seeds} "
        "seed(s) an arm on the same split. Each model's folder holds its full report "
        "(validation curves, every test metric, figures): "
        + ", ".join(f"[{st.base.model}]({st.base.model}/report.md)" for st in studies) + ".",
        "",
    ]
    if scored:
        lines += [
            "On the test split: the mean over seeds of each run's best checkpoint; in "
            "brackets the paired difference to the same model's hard-label runs, **bold** "
            "where its 95 % bootstrap interval excludes 0.", "",
            "| model | loss | " + " | ".join(labels[k] for k in TABLE_METRICS) + " |",
            "|---|---|" + "---|" * len(TABLE_METRICS)]
    else:
        lines += ["No test split: validation numbers of each arm's final epoch, mean ± sd "
                  "over seeds.", "",
                  "| model | loss | " + " | ".join(label for _, label, _ in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
    lines += [row for row, has_test in table if has_test == scored]
    with output_folder(out) as staging:
        _write_csv(staging / "results.csv", ["model", *RESULTS_HEADER], results)
        if tests:
            _write_csv(staging / "test_results.csv", ["model", *TEST_HEADER], tests)
        (staging / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [out / name for name in names]


def _model_rows(model: str, summary: StudySummary, test: TestComparison | None
                ) -> list[tuple[str, bool]]:
    """The table's rows of one model: test values with their differences to CE when the
    study was scored on test (and, always, the validation rows for an unscored table)."""
    rows = []
    for r in summary.rows:
        cells = [f"{r.mean[key]:.4f} ± {r.std[key]:.4f}" for key, _, _ in METRICS]
        rows.append((f"| {model} | {arm_label(r.loss)} | " + " | ".join(cells) + " |", False))
    if test is None:
        return rows
    for arm, values in test.values.items():
        cells = []
        for key in TABLE_METRICS:
            text = f"{values[key][0]:.4f}"
            diff = test.differences.get(arm, {}).get(key)
            if diff is not None and math.isfinite(diff[0]):
                change = f"{diff[0]:+.4f}"
                text += f" ({'**' + change + '**' if test.significant(arm, key) else change})"
            cells.append(text)
        rows.append((f"| {model} | {arm_label(arm)} | " + " | ".join(cells) + " |", True))
    return rows
