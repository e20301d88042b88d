"""The evaluation bootstrap on a RadImageNet-sized test set: 50,000 images x 165 classes,
1,000 resamples, every metric of metrics.json and per_class.csv, and the conformal
prediction sets (calibrated on a validation set of the same size).

Baseline, side by side: the plain way, a Python loop over resamples that draws the
images and scores each resample with the metric module and scikit-learn (timed on a few
resamples and scaled to the same count). Two synthetic models: a weak one (49 % Top-1,
where AUROC/AP need the first-order resampling) and a strong one (96 %, resampled
exactly).

    .venv/bin/python bench/bootstrap.py [--images 50000] [--classes 165] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

from olsdesk.core import metrics
from olsdesk.core.bootstrap import mean_samples, metric_samples
from olsdesk.core.conformal import calibrate, covered_and_size


def synthetic(n: int, k: int, strength: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1.5, (n, k))
    logits[np.arange(n), labels] += strength
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), labels


def plain_resample(p, y, rng) -> None:
    idx = rng.integers(0, len(y), len(y))
    q, t = p[idx], y[idx]
    for fn in (metrics.expected_calibration_error, metrics.adaptive_calibration_error,
               metrics.classwise_calibration_error, metrics.brier_score,
               metrics.negative_log_likelihood):
        fn(q, t)
    metrics.topk_accuracy(q, t, 1)
    metrics.topk_accuracy(q, t, 5)
    balanced_accuracy_score(t, q.argmax(1))
    for c in range(p.shape[1]):
        positive = t == c
        if 0 < positive.sum() < len(t):
            roc_auc_score(positive, q[:, c])
            average_precision_score(positive, q[:, c])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--baseline-resamples", type=int, default=3)
    args = parser.parse_args()
    n, k, r = args.images, args.classes, args.resamples
    print(f"{n} images x {k} classes, {r} resamples")
    for name, strength in (("weak model", 4.0), ("strong model", 7.0)):
        p, y = synthetic(n, k, strength)
        start = time.perf_counter()
        result = metric_samples(p, y, resamples=r)
        ours = time.perf_counter() - start
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(args.baseline_resamples):
            plain_resample(p, y, rng)
        plain = (time.perf_counter() - start) / args.baseline_resamples * r
        print(f"{name} (Top-1 {result.value['top1']:.2f}, AUROC/AP resampled "
              f"{result.rank_method}): vectorised {ours:.2f} s, plain loop {plain:.0f} s "
              f"(from {args.baseline_resamples} resamples), speed-up {plain / ours:.0f}x")
        # conformal: calibrate on validation (each epoch's end), fit APS, sets on test and
        # their coverage and size on every resample (evaluate); baseline: the resamples
        # of coverage and size drawn one by one
        p_val, y_val = synthetic(n, k, strength, seed=1)
        start = time.perf_counter()
        calibration = calibrate(p_val, y_val)
        calibrated = time.perf_counter() - start
        start = time.perf_counter()
        sets = calibration.fit("aps", 0.9).sets(p)
        values = np.stack(covered_and_size(sets, y), 1)
        _, samples = mean_samples(values, resamples=r)
        scored = time.perf_counter() - start
        others = ", ".join(
            f"{m.upper()} {c.mean():.3f} / {z.mean():.1f}" for m in ("lac", "raps")
            for c, z in [covered_and_size(calibration.fit(m, 0.9).sets(p), y)])
        start = time.perf_counter()
        for _ in range(r):
            values[rng.integers(0, n, n)].mean(axis=0)
        loop = time.perf_counter() - start
        print(f"  conformal: calibration {calibrated:.2f} s; APS sets, coverage "
              f"{values[:, 0].mean():.3f}, mean size {values[:, 1].mean():.1f}, and their "
              f"{r} resamples {scored:.2f} s (the resamples alone by a plain loop "
              f"{loop:.2f} s); coverage / mean size of {others}")


if __name__ == "__main__":
    main()
