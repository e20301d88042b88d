"""Accuracy, proper scoring rules, the calibration-error family and embedding separation.

All functions take numpy arrays: ``probs`` (N x K, rows sum to 1) and ``labels`` (N,
integers). Definitions: docs/ALGORITHMS.md. Equal-width bins on [0, 1], bin b holds
``lower < c <= upper`` and the first bin also holds 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the k most probable classes."""
    probs, labels = _check(probs, labels)
    k = min(k, probs.shape[1])
    # argpartition: O(NK) instead of a full sort; ties resolved arbitrarily, as in torch.topk.
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean of ``-log p(true class)``."""
    probs, labels = _check(probs, labels)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPS, None))))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of the squared distance to the one-hot label; in [0, 2]."""
    probs, labels = _check(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclass(frozen=True)
class ReliabilityBins:
    """Per equal-width confidence bin: sample count, accuracy and mean confidence."""

    edges: np.ndarray  # n_bins + 1
    counts: np.ndarray  # n_bins, int
    accuracy: np.ndarray  # n_bins, NaN where empty
    confidence: np.ndarray  # n_bins, NaN where empty

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over the bins."""
        return _ece_from(self.counts, self.accuracy, self.confidence)

    @property
    def mce(self) -> float:
        """The largest |accuracy - confidence| over non-empty bins."""
        nonempty = self.counts > 0
        if not nonempty.any():
            return 0.0
        return float(np.max(np.abs(self.accuracy[nonempty] - self.confidence[nonempty])))


def bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """The equal-width bin of each confidence: lower < c <= upper; c == 0 goes to the
    first bin (the one binning of the diagram, ECE, MCE and the error browser)."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def _binned(conf: np.ndarray, hits: np.ndarray, n_bins: int):
    idx = bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=hits, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, acc_sum / counts, conf_sum / counts


def _top_label(probs: np.ndarray, labels: np.ndarray):
    conf = probs.max(axis=1)
    hits = (probs.argmax(axis=1) == labels).astype(np.float64)
    return conf.astype(np.float64), hits


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """The reliability diagram's data for top-label confidence."""
    probs, labels = _check(probs, labels)
    conf, hits = _top_label(probs, labels)
    counts, acc, mean_conf = _binned(conf, hits, n_bins)
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), counts, acc, mean_conf)


def _ece_from(counts: np.ndarray, acc: np.ndarray, conf: np.ndarray) -> float:
    nonempty = counts > 0
    total = counts.sum()
    if total == 0:
        return 0.0
    gaps = np.abs(acc[nonempty] - conf[nonempty])
    return float(np.sum(counts[nonempty] / total * gaps))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width bins."""
    return reliability_bins(probs, labels, n_bins).ece


def maximum_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """MCE: the largest |accuracy - confidence| over non-empty bins."""
    return reliability_bins(probs, labels, n_bins).mce


def rms_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Root of the count-weighted mean squared gap (torchmetrics' 'l2' norm)."""
    bins = reliability_bins(probs, labels, n_bins)
    nonempty = bins.counts > 0
    weights = bins.counts[nonempty] / bins.counts.sum()
    gaps = bins.accuracy[nonempty] - bins.confidence[nonempty]
    return float(np.sqrt(np.sum(weights * gaps**2)))


def adaptive_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-count bins: the sorted confidences split into n_bins groups."""
    probs, labels = _check(probs, labels)
    conf, hits = _top_label(probs, labels)
    order = np.argsort(conf, kind="stable")
    total = len(conf)
    ece = 0.0
    for group in np.array_split(order, min(n_bins, total)):
        if len(group):
            ece += len(group) / total * abs(hits[group].mean() - conf[group].mean())
    return float(ece)


def classwise_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Mean over classes k of the ECE of p_k against the indicator [y = k]."""
    probs, labels = _check(probs, labels)
    errors = []
    for k in range(probs.shape[1]):
        conf = probs[:, k].astype(np.float64)
        hits = (labels == k).astype(np.float64)
        errors.append(_ece_from(*_binned(conf, hits, n_bins)))
    return float(np.mean(errors))


def confidence_histogram(probs: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Counts of top-label confidence in the same equal-width bins as the diagram."""
    conf = np.asarray(probs, dtype=np.float64).max(axis=1)
    return np.bincount(bin_index(conf, n_bins), minlength=n_bins)


def mean_prediction_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row c: the mean predicted distribution over validation samples of true class c."""
    probs, labels = _check(probs, labels)
    sums = np.zeros((num_classes, probs.shape[1]))
    np.add.at(sums, labels, probs)
    counts = np.bincount(labels, minlength=num_classes)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class Separation:
    """How well an embedding separates classes: higher silhouette and lower ratio are better."""

    silhouette: float  # in [-1, 1]
    intra_inter_ratio: float  # mean intra-class distance / mean inter-class distance


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
    squared = np.einsum("ij,ij->i", x, x)
    d2 = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.maximum(d2, 0.0))


def embedding_separation(features: np.ndarray, labels: np.ndarray) -> Separation:
    """Silhouette score (Rousseeuw 1987, Euclidean; singletons score 0, as scikit-learn)
    and the intra/inter mean-distance ratio of an embedding."""
    x = np.asarray(features, dtype=np.float64)
    _, labels = np.unique(np.asarray(labels), return_inverse=True)
    k = labels.max() + 1 if len(labels) else 0
    if k < 2 or len(labels) < 3:
        return Separation(float("nan"), float("nan"))
    dist = _pairwise_distances(x)
    onehot = np.eye(k)[labels]
    sums = dist @ onehot  # N x K: summed distance from each point to each class
    counts = onehot.sum(axis=0)
    own = counts[labels]
    a = sums[np.arange(len(labels)), labels] / np.maximum(own - 1, 1)
    means = sums / counts
    means[np.arange(len(labels)), labels] = np.inf
    b = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sil = np.where(own > 1, (b - a) / np.maximum(a, b), 0.0)
    silhouette = float(np.nanmean(sil)) if k < len(labels) else float("nan")
    same = labels[:, None] == labels[None, :]
    n = len(labels)
    intra_pairs = same.sum() - n
    intra = (dist * same).sum() / intra_pairs if intra_pairs else float("nan")
    inter = (dist * ~same).sum() / (~same).sum()
    ratio = float(intra / inter) if inter > 0 and intra == intra else float("nan")
    return Separation(silhouette, ratio)


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be N x K and labels N; got {probs.shape} and {labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("no samples to score")
    return probs, labels
