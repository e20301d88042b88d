"""The unfamiliar-input detector's epoch-end fit at RadImageNet's size: the embedding's
2,000 validation images with ResNet-50's 2,048 penultimate features, 165 classes.

Baseline, side by side: the plain way, scikit-learn's LedoitWolf on the D x D covariance
and numpy's inverse of it, fitted the same number of times (five folds for the threshold
and one on all images) and scoring with the full D x D precision matrix. olsdesk works
from the n x n Gram matrix (Woodbury and a Cholesky factor: the same inverse). Also:
scoring a predict batch of 64, how far its scores are from the full matrix's, and the
bytes a checkpoint gains.

    .venv/bin/python bench/ood.py [--images 2000] [--features 2048] [--classes 165]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from olsdesk.core import ood


def features(n: int, d: int, k: int, seed: int = 0, world: int = 0):
    """Non-negative, correlated features (as after ReLU and pooling), class-shifted;
    another ``world`` is images of another kind (other correlations, other classes)."""
    rng = np.random.default_rng(seed)
    structure = np.random.default_rng(1000 + world)
    labels = rng.integers(0, k, n)
    mixing = structure.normal(0, 1, (64, d)) / 8
    shifts = structure.normal(0, 0.3, (k, d))
    f = np.maximum(rng.normal(0, 1, (n, 64)) @ mixing + shifts[labels], 0)
    return f, labels


def plain_fit(f, y, k):
    means = np.stack([f[y == c].mean(0) if (y == c).any() else np.full(f.shape[1], np.nan)
                      for c in range(k)])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(f - means[y]).covariance_)
    return means, precision


def median_seconds(fn, rounds: int = 5) -> float:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def plain_score(model, f):
    means, precision = model
    means = means[np.isfinite(means).all(1)]
    fp, mp = f @ precision, means @ precision
    return -((fp * f).sum(1)[:, None] - 2 * fp @ means.T + (mp * means).sum(1)[None]).min(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=165)
    args = parser.parse_args()
    f, y = features(args.images, args.features, args.classes)
    ood.fit_density(f[:50], y[:50], args.classes)  # imports and first-call costs
    started = time.perf_counter()
    fam = ood.fit_familiarity(np.zeros(len(y)), f, y, args.classes)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    fold = np.random.default_rng(0).permutation(len(y)) % 5
    for k in range(5):
        plain_fit(f[fold != k], y[fold != k], args.classes)
    plain = plain_fit(f, y, args.classes)
    baseline = time.perf_counter() - started
    print(f"fit at {args.images} x {args.features}, {args.classes} classes: olsdesk "
          f"{ours:.2f} s, plain {baseline:.2f} s (ratio {baseline / ours:.1f})")
    batch = f[:64]
    ours_scores = fam.score(None, batch)
    loaded = ood.Familiarity.from_arrays(fam.to_arrays())  # as prediction has it (float32)
    saved = loaded.score(None, batch)
    ours = median_seconds(lambda: loaded.score(None, batch))
    baseline = median_seconds(lambda: plain_score(plain, batch))
    plain_scores = plain_score(plain, batch)
    apart = [np.abs(s / plain_scores - 1).max() for s in (ours_scores, saved)]
    print(f"score a batch of 64 (median of 5, the detector as a checkpoint loads it): "
          f"olsdesk {ours * 1e3:.1f} ms, plain {baseline * 1e3:.1f} ms "
          f"(ratio {baseline / ours:.1f}); largest relative difference from the full-matrix "
          f"score {apart[0]:.1e} (as a checkpoint keeps it: {apart[1]:.1e})")
    fresh, _ = features(1000, args.features, args.classes, seed=1)
    other, _ = features(1000, args.features, args.classes, seed=2, world=1)
    mixed = 0.5 * fresh + 0.5 * other  # halfway: harder to tell
    for name, outside in (("another kind", other), ("halfway", mixed)):
        found = [ood.detection_metrics(score(fresh), score(outside))["auroc"]
                 for score in (lambda x: fam.score(None, x), lambda x: plain_score(plain, x))]
        print(f"AUROC, fresh images against {name}: olsdesk {found[0]:.4f}, full matrix "
              f"{found[1]:.4f}")
    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                for k, v in fam.to_arrays().items()}, buffer)
    print(f"a checkpoint gains {len(buffer.getvalue()) / 1e6:.2f} MB (the full precision "
          f"matrix alone: {args.features ** 2 * 4 / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
