"""The recalibrators' epoch-end fit at RadImageNet's validation size: 135,000 images, 165
classes (the trainer fits them on every epoch's validation log-probabilities).

Baseline, side by side on the same arrays: the temperature's fit (``fit_temperature``,
which every epoch end already pays). Printed: each fit's seconds and its ratio to the
temperature's, and the NLL each reaches on held-out images drawn the same way.

    .venv/bin/python bench/recalibration.py [--images 135000] [--classes 165]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from olsdesk.core import calibration, metrics


def log_probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An over-confident classifier's log-probabilities with a per-class bias
    (imbalanced classes, as RadImageNet's): what vector scaling can fix and T cannot."""
    prior = np.random.default_rng(1).dirichlet(np.full(k, 0.3))  # one population
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=prior)
    logits = rng.normal(size=(n, k)) * 1.2
    logits[np.arange(n), labels] += 2.5
    logits = 2.0 * logits + np.random.default_rng(1).normal(0, 0.5, k)  # sharp, biased
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True)), labels


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=135_000)
    parser.add_argument("--classes", type=int, default=165)
    args = parser.parse_args()
    val, y = log_probs(args.images, args.classes, 0)
    test, y_test = log_probs(min(args.images, 20_000), args.classes, 2)
    temperature, t_seconds = timed(lambda: calibration.fit_temperature(val, y))
    (scale, bias), v_seconds = timed(lambda: calibration.fit_vector_scaling(val, y, temperature))
    (edges, values), h_seconds = timed(
        lambda: calibration.fit_histogram_binning(np.exp(val), y))
    print(f"{args.images:,} x {args.classes} validation log-probabilities, float64")
    for name, seconds in (("temperature (baseline)", t_seconds), ("vector scaling", v_seconds),
                          ("histogram binning", h_seconds)):
        print(f"  {name:26s} {seconds:6.2f} s  ratio {seconds / t_seconds:5.2f}")
    fitted = calibration.Recalibration(temperature, scale, bias, edges, values)
    print(f"held-out NLL ({len(y_test):,} images): raw "
          f"{metrics.negative_log_likelihood(np.exp(test), y_test):.4f}", end="")
    for method in fitted.methods:
        print(f", {method} {metrics.negative_log_likelihood(fitted.apply(method, test), y_test):.4f}",
              end="")
    print()


if __name__ == "__main__":
    main()
