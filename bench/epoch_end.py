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
forces one). Two comparisons, each run ``--fit-rounds`` times in alternating order so
that the training's own run-to-run spread (several seconds on a shared VM) falls on
both sides:

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
pass (a side slower throughout, or only in stretches), each comparison's medians and the
median of its per-round ratios, how long training waited at each epoch end, and what the
host copy of ResNet-50's weights and optimiser state costs.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from train_overhead import bare_loop

from olsdesk.config import RunConfig
from olsdesk.core import metrics, ood, trainer
from olsdesk.core.data.sources import open_dataset
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


def fit_seconds(data: Path, epochs: int, val: dict | None, inline: bool | None,
                device: str = "cpu") -> tuple[float, list, dict, list]:
    """One ``Trainer.fit``: its seconds, what training waited at each epoch end
    (``inline`` None: where the trainer runs the epoch end on ``device``), its parts'
    seconds summed over the epochs (the training passes, the validation passes and the
    epoch ends, wherever they ran), and each validation batch's seconds (from one
    progress report to the next), a list an epoch."""
    waits: list[float] = []
    batches: list[list[float]] = []
    parts: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as runs:
        run = Trainer(fit_config(data, epochs, device), runs_dir=runs)
        run.prepare()
        run_epoch, validate, end_epoch = run._run_epoch, run._validate, run._end_epoch
        began = [0.0]

        def timed_epoch(epoch):
            began[0] = time.perf_counter()
            return (yield from run_epoch(epoch))

        began_validating = [0.0]

        def timed_validate(epoch):
            started = began_validating[0] = time.perf_counter()
            parts["train"] += started - began[0]
            out = yield from validate(epoch)
            parts["validate"] += time.perf_counter() - started
            # RadImageNet's validation predictions, not the run's own
            return out if val is None or out is None else val

        def timed_end(*args):
            started = time.perf_counter()
            try:
                return end_epoch(*args)
            finally:
                parts["epoch end"] += time.perf_counter() - started

        if val is not None:
            run.embed_mask = val["mask"]
        run._run_epoch, run._validate, run._end_epoch = timed_epoch, timed_validate, timed_end
        collect = run._collect

        def timed_collect(wait=True):
            started = time.perf_counter()
            yield from collect(wait)
            if wait and run._pending is None:
                waits.append(time.perf_counter() - started)

        run._collect = timed_collect
        run.epoch_end_beside = None if inline is None else not inline
        started = last = time.perf_counter()
        for progress in run.fit():
            now = time.perf_counter()
            if getattr(progress, "phase", None) == "validate":
                if progress.batch == 1:
                    batches.append([])
                    last = began_validating[0]
                batches[-1].append(now - last)
            last = now
        return time.perf_counter() - started, waits, parts, batches


def bare_seconds(data: Path, epochs: int) -> tuple[float, list, dict, list]:
    config = fit_config(data, epochs, "cpu")
    parts: dict[str, float] = {}
    batches: list[list[float]] = []
    return bare_loop(config, open_dataset(config), parts, batches), [], parts, batches


def by_sixth(batches: list[float]) -> str:
    """A validation pass's median batch, in milliseconds, in each sixth of the pass: a
    side slower throughout, or only in some stretches (the machine's busy moments)."""
    sixths = np.array_split(np.asarray(batches) * 1e3, 6)
    return " ".join(f"{np.median(part):.1f}" for part in sixths if len(part))


def beside(val: dict, k: int, images: int, epochs: int, device: str, inline: bool | None,
           rounds: int, which: str = "both") -> None:
    n = len(val["labels"])
    with tempfile.TemporaryDirectory() as folder:
        small = archive(Path(folder) / "small_validation.npz", images, k)
        fit_seconds(small, 1, None, inline, device)  # warm: imports, first allocations
        comparisons = {}  # name: (the trainer's run, its baseline)
        if device == "cpu" and which != "small":  # the bare loop has no device code
            whole = archive(Path(folder) / "whole_validation.npz", images, k, val=n)
            comparisons[f"validating {n:,} images, against the bare loop"] = (
                lambda: fit_seconds(whole, epochs, val, inline, device),
                lambda: bare_seconds(whole, epochs))
        if which != "bare" or device != "cpu":
            comparisons[f"a small validation split, the epoch end on {n:,} (stricter)"] = (
                lambda: fit_seconds(small, epochs, val, inline, device),
                lambda: fit_seconds(small, epochs, None, inline, device))
        seconds = {name: ([], []) for name in comparisons}
        for r in range(rounds):
            for name, runs in comparisons.items():
                order = (0, 1) if r % 2 == 0 else (1, 0)  # who goes first alternates
                took = [None, None]
                for side in order:
                    took[side] = runs[side]()
                    seconds[name][side].append(took[side][0])
                waits = took[0][1]  # none in line: there the epoch end is training's own time
                waited = (f"; training waited at the epoch ends: "
                          f"{', '.join(f'{w:.2f}' for w in waits)} s"
                          if max(waits, default=0) > 0.005 else "")
                print(f"  round {r + 1}, {name}: Trainer.fit {took[0][0]:.2f} s, baseline "
                      f"{took[1][0]:.2f} s, ratio {took[0][0] / took[1][0]:.3f}{waited}",
                      flush=True)
                for who, (_, _, parts, batches) in zip(("Trainer.fit", "baseline"), took,
                                                       strict=True):
                    print(f"    {who}: " + ", ".join(f"{part} {seconds:.2f} s"
                                                    for part, seconds in parts.items()))
                    for epoch, times in enumerate(batches, start=1):
                        print(f"      validation {epoch}, {len(times)} batches, median ms a "
                              f"batch by sixth: {by_sixth(times)}")
    way = {None: "the trainer's way", True: "in line", False: "beside training"}[inline]
    print(f"Trainer.fit on {device} ({way}), {epochs} epochs of {images:,} training images, "
          f"{k} classes, {n:,} validation predictions at each epoch end, {rounds} rounds:")
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
               args.fit_rounds, args.comparison)


if __name__ == "__main__":
    main()
