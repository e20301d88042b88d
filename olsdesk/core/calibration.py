"""Temperature scaling (Guo et al., 2017): one scalar T that minimises the NLL of
softmax(logits / T) on held-out data. Log-probabilities work as logits (softmax is
shift-invariant), so a run's stored validation probabilities are enough."""

from __future__ import annotations

import numpy as np

T_RANGE = (0.05, 20.0)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll_at_temperature(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = _log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 80) -> float:
    """The T in T_RANGE minimising validation NLL. The NLL is convex in 1/T, hence
    unimodal in log T: a golden-section search on log T finds the minimum."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc = nll_at_temperature(logits, labels, np.exp(c))
    fd = nll_at_temperature(logits, labels, np.exp(d))
    for _ in range(iterations):
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = nll_at_temperature(logits, labels, np.exp(c))
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = nll_at_temperature(logits, labels, np.exp(d))
    return float(np.exp((lo + hi) / 2.0))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as probabilities."""
    return np.exp(_log_softmax(np.asarray(logits, dtype=np.float64) / temperature))


def cross_fitted_scaling(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Temperature-scaled probabilities where no image is scaled by a T fitted on itself.

    The images are split in two random halves; T fitted on one half scales the other,
    and the other way round. The calibration measured on the result is an honest
    estimate of what scaling does for new images (fitting and measuring on the same
    images flatters it). With fewer than 4 images, the in-sample fit is used.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)
    if n < 4:
        return apply_temperature(logits, fit_temperature(logits, labels))
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    scaled = np.empty_like(logits)
    for fit_on, apply_to in (halves, halves[::-1]):
        t = fit_temperature(logits[fit_on], labels[fit_on])
        scaled[apply_to] = apply_temperature(logits[apply_to], t)
    return scaled
