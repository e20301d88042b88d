"""The trainer's epoch-end analysis at RadImageNet's validation size: 135,000 images, 165
classes, every epoch (``Trainer._report``: metrics, the temperature and its cross-fit,
the other recalibrators, conformal calibration, unfamiliar-input scores, smooth
reliability and its band, the PCA and separation of the embedded sample).

Baseline, side by side on the same arrays: top-1, NLL and ECE alone (what a bare loop
would report). Printed: the analysis's seconds (median of --rounds), the baseline's, their
ratio, and where the analysis's time goes (each function it calls, timed on the way).

    .venv/bin/python bench/epoch_end.py [--images 135000] [--classes 165] [--features 2048]
                                        [--rounds 3]

``--features``: the penultimate layer's width (ResNet-50's 2048; MobileNetV2's 1280),
which the unfamiliar-input fit works on, for the embedded sample only.

``--beside``: also ``Trainer.fit`` for ``--epochs`` epochs on a MedMNIST-shaped archive of
``--train-images`` at 28 px and the same number of classes (smallcnn), its validation's
predictions replaced by the 135,000 above, the epoch end run as the trainer runs it on
``--device`` (in line on the CPU, beside the next epoch's training on a GPU; ``--way``
forces one). Two comparisons, each run ``--fit-rounds`` times, who goes first
alternating. Within a round the two sides take turns of ``--turn`` batches (default 50,
about a second), each side's steps timed alone, so that this VM's busy stretches (its
speed moves 10-20 % for seconds to a minute) fall on both sides alike; ``--turn 0`` runs
each side whole, one after the other, as the bench did before. Where the epoch end runs
beside training its thread would go on during the other side's turn, so there the sides
run one after the other whatever ``--turn`` says:

1. against the bare loop of ``bench/train_overhead.py`` (the same training, and a plain
   validation pass computing top-1), both validating a split of as many images as
   ``--images``: the trainer's real validation pass runs, and its predictions are then
   replaced by the ones above (the issue's "Trainer/bare loop with a validation set of
   that size"). CPU only: the bare loop has no device code.
2. stricter: both runs validate only a small split (two images a class), and the
   trainer's epoch end gets the 135,000 predictions; the baseline is the same trainer
   with its small split's epoch end. This leaves out the validation pass, which both pay
   at that size, so its ratio bounds the first comparison's from above.

``--comparison bare`` or ``small`` runs only the first or the second.

Printed: each round's seconds and ratios, each side's parts (training passes, validation
passes, epoch ends) and its validation passes' median batch time in each sixth of the
pass (a side slower throughout, or only in stretches) and its mean (where a side's
median batch is no slower, the mean shows its slow batches), each comparison's medians and the
median of its per-round ratios, how long training waited at each epoch end, and what the
host copy of ResNet-50's weights and optimiser state costs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from train_overhead import bare_steps

from olsdesk.config import RunConfig
from olsdesk.core import metrics, ood, trainer
from olsdesk.core.data.sources import open_dataset
from olsdesk.core.report import BatchProgress
from olsdesk.core.trainer import Trainer


def validation(n: int, k: int, embedded: int, width: int, seed: int = 0) -> dict:
    """What ``Trainer._validate`` hands the epoch end: float32 softmax made float64 (each
    row divided by its sum), an over-confident classifier of imbalanced classes (as
    RadImageNet's)."""
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(k, 0.3))
    labels = rng.choice(k, size=n, p=prior)
    logits = (rng.normal(size=(n, k)) * 2.4).astype(np.float32)
    logits[np.arange(n), labels] += 4.0 * (rng.random(n) < 0.8)
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    embed = np.zeros(n, dtype=bool)
    embed[np.sort(rng.choice(n, min(embedded, n), replace=False))] = True
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return {"probs": probs, "labels": labels, "indices": np.arange(n),
            "energy": np.log(np.exp(logits).sum(1)), "embedded": np.flatnonzero(embed),
            "features": rng.normal(size=(int(embed.sum()), width)).astype(np.float32),
            "mask": embed}


def report(val: dict, k: int) -> float:
    cfg = RunConfig()
    stub = types.SimpleNamespace(
        config=cfg, embed_mask=val["mask"], skipped=[],
        dataset=types.SimpleNamespace(num_classes=k, class_names=[f"c{i}" for i in range(k)]))
    started = time.perf_counter()
    Trainer._report(stub, 0, np.eye(k), np.ones(k), 0.1, 2.0, 0.5, 0.8, val, 60.0, 100.0, 0)
    return time.perf_counter() - started


def baseline(val: dict) -> float:
    started = time.perf_counter()
    metrics.topk_accuracy(val["probs"], val["labels"], 1)
    metrics.negative_log_likelihood(val["probs"], val["labels"])
    metrics.expected_calibration_error(val["probs"], val["labels"])
    return time.perf_counter() - started


def breakdown(val: dict, k: int) -> dict[str, float]:
    """Seconds in each function the epoch end calls by name, from one more run."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    patched = {}
    for name in dir(trainer):
        fn = getattr(trainer, name)
        if isinstance(fn, types.FunctionType) and fn.__module__.startswith("olsdesk.core.") \
                and fn.__module__ != "olsdesk.core.trainer":
            patched[name] = fn
            setattr(trainer, name, timed(name, fn))
    original_metrics = {n: getattr(metrics, n) for n in dir(metrics)
                        if isinstance(getattr(metrics, n), types.FunctionType)
                        and not n.startswith("_")}
    for name, fn in original_metrics.items():
        setattr(metrics, name, timed(f"metrics.{name}", fn))
    # the unfamiliar-input fit's parts: its full fit, five folds, and the sample's Gram
    # matrix (computed by whichever asks first)
    original_ood = {n: getattr(ood, n) for n in ("fit_density", "_held_out_score",
                                                 "_sample_gram")}
    for name, fn in original_ood.items():
        setattr(ood, name, timed(f"ood.{name}", fn))
    try:
        spent["(all)"] = report(val, k)
    finally:
        for name, fn in patched.items():
            setattr(trainer, name, fn)
        for name, fn in original_metrics.items():
            setattr(metrics, name, fn)
        for name, fn in original_ood.items():
            setattr(ood, name, fn)
    return spent


def archive(path: Path, n: int, k: int, val: int | None = None, seed: int = 0) -> Path:
    """A MedMNIST-shaped archive: ``n`` training images of ``k`` classes, 28 px, a
    validation split of ``val`` images (default: two a class) and a small test split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in (("train", n), ("val", val or 2 * k), ("test", 2 * k)):
        labels = np.arange(size) % k
        images = rng.integers(0, 60, size=(size, 28, 28), dtype=np.uint8)
        images[:, 4:24, 4:24] += (labels * 1.2).astype(np.uint8)[:, None, None]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


def fit_config(data: Path, epochs: int, device: str) -> RunConfig:
    return RunConfig(data=str(data), model="smallcnn", image_size=28, epochs=epochs,
                     batch_size=64, device=device, num_workers=0)


def trainer_side(stack: contextlib.ExitStack, data: Path, epochs: int, val: dict | None,
                 inline: bool | None, device: str = "cpu") -> tuple[Iterator[str], list]:
    """A prepared ``Trainer`` (its run folder in ``stack``): its ``fit()`` as the phase of
    each step ("train", "validate", or "epoch end" for the step that yields a report: the
    validation pass's close, and on the CPU the epoch end itself), and a list that gets
    what training waited at each epoch end (``inline`` None: where the trainer runs the
    epoch end on ``device``). ``val``: the predictions the epoch end gets instead of the
    run's own."""
    waits: list[float] = []
    runs = stack.enter_context(tempfile.TemporaryDirectory())
    run = Trainer(fit_config(data, epochs, device), runs_dir=runs)
    run.prepare()
    validate, collect = run._validate, run._collect

    def replaced(epoch):
        out = yield from validate(epoch)
        # RadImageNet's validation predictions, not the run's own
        return out if val is None or out is None else val

    def timed_collect(wait=True):
        started = time.perf_counter()
        yield from collect(wait)
        if wait and run._pending is None:
            waits.append(time.perf_counter() - started)

    if val is not None:
        run.embed_mask = val["mask"]
    run._validate, run._collect = replaced, timed_collect
    run.epoch_end_beside = None if inline is None else not inline
    steps = (item.phase if isinstance(item, BatchProgress) else "epoch end"
             for item in run.fit())
    return steps, waits


def bare_side(stack: contextlib.ExitStack, data: Path, epochs: int) -> tuple[Iterator[str], list]:
    config = fit_config(data, epochs, "cpu")
    steps = bare_steps(config, open_dataset(config))
    next(steps)  # built
    return steps, []


class Tally:
    """One side's seconds: in all, by phase, and each validation batch's, a list a pass."""

    def __init__(self):
        self.seconds = 0.0
        self.parts: dict[str, float] = defaultdict(float)
        self.batches: list[list[float]] = []
        self._last = None

    def add(self, phase: str | None, seconds: float) -> None:
        self.seconds += seconds
        if phase is None:  # the run's own end, after its last step
            return
        self.parts[phase] += seconds
        if phase == "validate":
            if self._last != "validate":
                self.batches.append([])
            self.batches[-1].append(seconds)
        self._last = phase


def in_turns(sides: list[Iterator[str]], turn: int) -> list[Tally]:
    """Each side's steps timed, the sides taking turns of ``turn`` steps each (0: each
    side whole, one after the other). In turns, a busy stretch of the machine (this VM's
    last seconds to a minute) falls on both sides alike instead of on whichever ran then."""
    tallies = [Tally() for _ in sides]
    live = list(range(len(sides)))
    while live:
        for i in list(live):
            taken = 0
            while not turn or taken < turn:
                started = time.perf_counter()
                phase = next(sides[i], None)
                tallies[i].add(phase, time.perf_counter() - started)
                if phase is None:
                    live.remove(i)
                    break
                taken += 1
    return tallies


def by_sixth(batches: list[float]) -> str:
    """A validation pass's median batch, in milliseconds, in each sixth of the pass: a
    side slower throughout, or only in some stretches (the machine's busy moments)."""
    sixths = np.array_split(np.asarray(batches) * 1e3, 6)
    return " ".join(f"{np.median(part):.1f}" for part in sixths if len(part))


def beside(val: dict, k: int, images: int, epochs: int, device: str, inline: bool | None,
           rounds: int, which: str = "both", turn: int = 50) -> None:
    n = len(val["labels"])
    if inline is False or (inline is None and device != "cpu"):
        turn = 0  # the epoch-end thread would work on through the other side's turns
    with tempfile.TemporaryDirectory() as folder:
        small = archive(Path(folder) / "small_validation.npz", images, k)
        # warm (imports, first allocations) on a few thousand images: an epoch of the
        # whole training set would add minutes at RadImageNet's 945,000
        warm = archive(Path(folder) / "warm.npz", min(images, 4096), k)
        with contextlib.ExitStack() as stack:
            in_turns([trainer_side(stack, warm, 1, None, inline, device)[0]], 0)
        comparisons = {}  # name: (the trainer's run, its baseline), each (stack) -> side
        if device == "cpu" and which != "small":  # the bare loop has no device code
            whole = archive(Path(folder) / "whole_validation.npz", images, k, val=n)
            comparisons[f"validating {n:,} images, against the bare loop"] = (
                lambda stack: trainer_side(stack, whole, epochs, val, inline, device),
                lambda stack: bare_side(stack, whole, epochs))
        if which != "bare" or device != "cpu":
            comparisons[f"a small validation split, the epoch end on {n:,} (stricter)"] = (
                lambda stack: trainer_side(stack, small, epochs, val, inline, device),
                lambda stack: trainer_side(stack, small, epochs, None, inline, device))
        seconds = {name: ([], []) for name in comparisons}
        for r in range(rounds):
            for name, makers in comparisons.items():
                order = (0, 1) if r % 2 == 0 else (1, 0)  # who goes first alternates
                with contextlib.ExitStack() as stack:
                    made = [makers[side](stack) for side in (0, 1)]
                    tallies = in_turns([made[side][0] for side in order], turn)
                took = [tallies[order.index(side)] for side in (0, 1)]
                for side in (0, 1):
                    seconds[name][side].append(took[side].seconds)
                waits = made[0][1]  # none in line: there the epoch end is training's own time
                waited = (f"; training waited at the epoch ends: "
                          f"{', '.join(f'{w:.2f}' for w in waits)} s"
                          if max(waits, default=0) > 0.005 else "")
                print(f"  round {r + 1}, {name}: Trainer.fit {took[0].seconds:.2f} s, baseline "
                      f"{took[1].seconds:.2f} s, ratio {took[0].seconds / took[1].seconds:.3f}"
                      f"{waited}", flush=True)
                for who, tally in zip(("Trainer.fit", "baseline"), took, strict=True):
                    print(f"    {who}: " + ", ".join(f"{part} {s:.2f} s"
                                                    for part, s in tally.parts.items()))
                    for epoch, times in enumerate(tally.batches, start=1):
                        print(f"      validation {epoch}, {len(times)} batches, mean "
                              f"{1e3 * statistics.fmean(times):.2f} ms a batch; median by "
                              f"sixth: {by_sixth(times)}")
    way = {None: "the trainer's way", True: "in line", False: "beside training"}[inline]
    taking = (f"in turns of {turn} steps" if turn else "one after the other")
    print(f"Trainer.fit on {device} ({way}), {epochs} epochs of {images:,} training images, "
          f"{k} classes, {n:,} validation predictions at each epoch end, {rounds} rounds, "
          f"the two sides {taking}:")
    for name, (ours, base) in seconds.items():
        ratios = [a / b for a, b in zip(ours, base, strict=True)]
        print(f"  {name}: median {statistics.median(ours):.2f} s against "
              f"{statistics.median(base):.2f} s, ratio "
              f"{statistics.median(ours) / statistics.median(base):.3f}; per round "
              f"{', '.join(f'{q:.3f}' for q in ratios)}, median {statistics.median(ratios):.3f}"
              f"   (goal <= 1.05)")
    if inline is False or device != "cpu":
        print("  (the last wait: the run's end, for its last epoch's end)")
    print(f"the host copy of ResNet-50's weights and SGD momentum an epoch end takes: "
          f"{host_copy_seconds():.3f} s")


def host_copy_seconds() -> float:
    from olsdesk.core.models import build_model

    model = build_model("resnet50", 165, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # the momentum buffers exist from the first step
    started = time.perf_counter()
    trainer._host_copy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=135_000)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beside", action="store_true")
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fit-rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="--beside's training device (cuda: "
                        "the epoch end beside a GPU's training, as the trainer runs it there)")
    parser.add_argument("--way", choices=("trainer", "inline", "beside"), default="trainer",
                        help="where --beside's epoch end runs (default: the trainer's way "
                        "on --device)")
    parser.add_argument("--comparison", choices=("both", "bare", "small"), default="both",
                        help="--beside's comparisons: against the bare loop (1, the CPU "
                        "only), the small split's (2), or both")
    parser.add_argument("--turn", type=int, default=50,
                        help="--beside's two sides run in turns of this many steps (batches), "
                        "so that the machine's busy stretches fall on both; 0: each whole, "
                        "one after the other")
    args = parser.parse_args()
    val = validation(args.images, args.classes, RunConfig().embedding_samples, args.features)
    ours, base = [], []
    for _ in range(args.rounds):  # alternating, so that a busy moment hits both
        ours.append(report(val, args.classes))
        base.append(baseline(val))
    a, b = statistics.median(ours), statistics.median(base)
    print(f"{args.images:,} x {args.classes} validation predictions, {args.features} "
          f"features, median of {args.rounds} rounds")
    print(f"  epoch-end analysis        {a:7.3f} s")
    print(f"  top-1 + NLL + ECE (base)  {b:7.3f} s   ratio {a / b:6.1f}")
    spent = breakdown(val, args.classes)
    total = spent.pop("(all)")
    print(f"where the time goes (one more run, {total:.3f} s; nested calls counted in each):")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        if seconds >= 0.01 * total:
            print(f"  {name:40s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    if args.beside:
        inline = {"trainer": None, "inline": True, "beside": False}[args.way]
        beside(val, args.classes, args.train_images, args.epochs, args.device, inline,
               args.fit_rounds, args.comparison, args.turn)


if __name__ == "__main__":
    main()
