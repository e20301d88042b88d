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
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import types
from collections import defaultdict

import numpy as np

from olsdesk.config import RunConfig
from olsdesk.core import metrics, trainer
from olsdesk.core.trainer import Trainer


def validation(n: int, k: int, embedded: int, width: int, seed: int = 0) -> dict:
    """What ``Trainer._validate`` hands the epoch end: float32 softmax made float64, an
    over-confident classifier of imbalanced classes (as RadImageNet's)."""
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(k, 0.3))
    labels = rng.choice(k, size=n, p=prior)
    logits = (rng.normal(size=(n, k)) * 2.4).astype(np.float32)
    logits[np.arange(n), labels] += 4.0 * (rng.random(n) < 0.8)
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    embed = np.zeros(n, dtype=bool)
    embed[np.sort(rng.choice(n, min(embedded, n), replace=False))] = True
    return {"probs": probs.astype(np.float64), "labels": labels, "indices": np.arange(n),
            "energy": np.log(np.exp(logits).sum(1)), "embedded": np.flatnonzero(embed),
            "features": rng.normal(size=(int(embed.sum()), width)).astype(np.float32),
            "mask": embed}


def report(val: dict, k: int) -> float:
    cfg = RunConfig()
    stub = types.SimpleNamespace(
        config=cfg, embed_mask=val["mask"], skipped=[],
        dataset=types.SimpleNamespace(num_classes=k, class_names=[f"c{i}" for i in range(k)]))
    started = time.perf_counter()
    Trainer._report(stub, 0, np.eye(k), np.ones(k), 0.1, 2.0, 0.5, 0.8, val, 60.0, 100.0)
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
    try:
        spent["(all)"] = report(val, k)
    finally:
        for name, fn in patched.items():
            setattr(trainer, name, fn)
        for name, fn in original_metrics.items():
            setattr(metrics, name, fn)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=135_000)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
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


if __name__ == "__main__":
    main()
