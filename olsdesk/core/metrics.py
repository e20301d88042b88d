"""Accuracy, proper scoring rules, the calibration-error family and embedding separation.

All functions take numpy arrays: ``probs`` (N x K, rows sum to 1) and ``labels`` (N,
integers). Definitions: docs/ALGORITHMS.md. Equal-width bins on [0, 1], bin b holds
``lower < c <= upper`` and the first bin also holds 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

_EPS = 1e-12


_BLOCK_ROWS = 2048  # rows of the probabilities top-k and classwise ECE take at once


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose label is among the k most probable classes; of equal
    probabilities the lower class index ranks first, as argmax does (so top-1 is the
    share of argmax hits the reliability diagram counts)."""
    probs, labels = _check(probs, labels)
    if k <= 1:
        return float(np.mean(probs.argmax(axis=1) == labels))
    # the label's rank: classes more probable, and equally probable ones before it (no
    # sort, no N x k index array), a block of rows at a time (its masks stay in the cache)
    ahead = np.empty(len(labels), dtype=np.int64)
    columns = np.arange(probs.shape[1])[None, :]
    for at in range(0, len(labels), _BLOCK_ROWS):
        p, y = probs[at:at + _BLOCK_ROWS], labels[at:at + _BLOCK_ROWS]
        true = p[np.arange(len(y)), y][:, None]
        above = p > true
        tied_before = p == true
        tied_before &= columns < y[:, None]
        above |= tied_before
        ahead[at:at + _BLOCK_ROWS] = np.count_nonzero(above, axis=1)
    return float(np.mean(ahead < k))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean of ``-log p(true class)``."""
    probs, labels = _check(probs, labels)
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _EPS, None))))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of the squared distance to the one-hot label; in [0, 2]."""
    probs, labels = _check(probs, labels)
    # sum_k (p_k - [k = y])^2 = sum_k p_k^2 - 2 p_y + 1: one pass, no one-hot copy
    squares = np.einsum("ij,ij->i", probs, probs)
    return float(np.mean(squares - 2.0 * probs[np.arange(len(labels)), labels] + 1.0))


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


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each image's top-label confidence, whether that label is its own: 0/1), float64:
    what the reliability diagram, ECE, AdaECE, L2 and the histogram reduce the
    probabilities to (the ``*_of_confidence`` functions take them). One pass over
    the probabilities: the maximum read where argmax found it."""
    predicted = probs.argmax(axis=1)
    conf = probs[np.arange(len(probs)), predicted].astype(np.float64)
    return conf, (predicted == labels).astype(np.float64)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """The reliability diagram's data for top-label confidence."""
    probs, labels = _check(probs, labels)
    return reliability_of_confidence(*top_label(probs, labels), n_bins)


def reliability_of_confidence(conf: np.ndarray, hits: np.ndarray,
                              n_bins: int = 15) -> ReliabilityBins:
    """``reliability_bins`` of top-label confidences against correctness (0/1)."""
    counts, acc, mean_conf = _binned(np.asarray(conf, dtype=np.float64),
                                     np.asarray(hits, dtype=np.float64), n_bins)
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


def ece_of_confidence(conf: np.ndarray, hits: np.ndarray, n_bins: int = 15) -> float:
    """ECE of top-label confidences against correctness (0/1): what
    expected_calibration_error computes once the probabilities are reduced to these."""
    return _ece_from(*_binned(np.asarray(conf, dtype=np.float64),
                              np.asarray(hits, dtype=np.float64), n_bins))


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
    return adaptive_of_confidence(*top_label(probs, labels), n_bins)


def adaptive_of_confidence(conf: np.ndarray, hits: np.ndarray, n_bins: int = 15) -> float:
    """``adaptive_calibration_error`` of top-label confidences against correctness."""
    conf, hits = np.asarray(conf, dtype=np.float64), np.asarray(hits, dtype=np.float64)
    count, hit_sum, conf_sum = _equal_count_bins(conf, hits, n_bins)
    return float(np.abs(hit_sum - conf_sum).sum() / len(conf))


def classwise_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Mean over classes k of the ECE of p_k against the indicator [y = k]."""
    probs, labels = _check(probs, labels)
    n, k = probs.shape
    # most of an N x K matrix (all but 14 values a row at 15 bins) lies in the first bin:
    # a block of rows at a time, only the values beyond it are found and binned, and the
    # first bin holds the rest (its count and hits by subtraction, whole numbers; its
    # confidences summed on). Every sum adds its values in row order, as a class's own
    # column's bincount does: the same numbers bit for bit, 4x faster than binning all
    first_sum = np.zeros(k)
    found_rows, found_cells, found_values = [], [], []
    for at in range(0, n, _BLOCK_ROWS):
        p = probs[at:at + _BLOCK_ROWS]
        beyond = p * n_bins > 1.0 if n_bins > 1 else np.zeros(p.shape, dtype=bool)
        # the running sums go on from the last block's (not a block's sum added to them)
        first_sum = np.add.reduce(np.vstack([first_sum[None], np.where(beyond, 0.0, p)]),
                                  axis=0)
        i, c = np.nonzero(beyond)
        values = p[i, c]
        found_rows.append(i + at)
        found_cells.append(c * n_bins + bin_index(values, n_bins))
        found_values.append(values)
    rows, cells, values = (np.concatenate(x) for x in (found_rows, found_cells, found_values))
    size = k * n_bins
    counts = np.bincount(cells, minlength=size).reshape(k, n_bins).astype(np.float64)
    conf_sum = np.bincount(cells, weights=values, minlength=size).reshape(k, n_bins).astype(
        np.float64)  # (an empty bincount is int64, weights or not)
    own = labels[rows] == cells // n_bins  # a value of the image's own class
    hit_sum = np.bincount(cells[own], minlength=size).reshape(k, n_bins).astype(np.float64)
    counts[:, 0] = n - counts[:, 1:].sum(axis=1)
    hit_sum[:, 0] = np.bincount(labels, minlength=k) - hit_sum[:, 1:].sum(axis=1)
    conf_sum[:, 0] = first_sum
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, conf = hit_sum / counts, conf_sum / counts
    return float(np.mean([_ece_from(*bins) for bins in zip(counts, acc, conf, strict=True)]))


# --- smooth ECE (Blasiok & Nakkiran, 2023) ------------------------------------------------
SMOOTH_GRID = 2049  # points of [0, 1] the residuals are smoothed on (spacing 1/2048)
SMOOTH_MIN_BANDWIDTH = 1e-3  # the bandwidth is never chosen below this
SUPPORTED = 0.01  # share of the peak density below which a smoothed curve is not drawn
_BISECTIONS = 30


def smooth_grid_weights(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower grid point, its share, the upper point's share) of each confidence: its
    weight is split between the two nearest points of the SMOOTH_GRID grid, linearly."""
    pos = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0) * (SMOOTH_GRID - 1)
    lower = np.minimum(pos.astype(np.int64), SMOOTH_GRID - 2)
    upper_share = pos - lower
    return lower, 1.0 - upper_share, upper_share


def _on_grid(conf: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(SMOOTH_GRID x columns) masses: each image's ``values`` row spread over its two
    nearest grid points."""
    lower, lo_share, hi_share = smooth_grid_weights(conf)
    values = values.reshape(len(conf), -1)
    out = np.zeros((SMOOTH_GRID, values.shape[1]))
    np.add.at(out, lower, lo_share[:, None] * values)
    np.add.at(out, lower + 1, hi_share[:, None] * values)
    return out


_TRAPEZOID = np.r_[0.5, np.ones(SMOOTH_GRID - 2), 0.5]
_FREQUENCY = np.pi * np.arange(SMOOTH_GRID)
_ROOT_STEPS = 20  # Illinois steps at most; they stop when error(s) - s is below
_ROOT_TOLERANCE = 1e-10  # (three or four steps, as the error is nearly linear in s)


def _smoothed(coeffs: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Grid masses (rows of DCT-I coefficients, one row a column of masses) convolved
    with a Gaussian of bandwidth ``sigma`` (one per row) reflected at 0 and 1: the
    reflected kernel is the Gaussian on the even, period-2 extension of [0, 1], which
    the cosine basis diagonalises, with gain exp(-(pi k sigma)^2 / 2) for cos(pi k t)."""
    gain = np.exp(-0.5 * (np.asarray(sigma, dtype=np.float64)[:, None] * _FREQUENCY) ** 2)
    return fft.idct(coeffs * gain, type=1, axis=1)


def smooth_rows(masses: np.ndarray, sigma: float) -> np.ndarray:
    """Rows of grid masses, each smoothed at bandwidth ``sigma``."""
    return _smoothed(fft.dct(masses, type=1, axis=1), np.full(len(masses), sigma))


def smooth_ece_from_grid(residual: np.ndarray, mass: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(smooth ECE, bandwidth) of every column of grid masses: ``residual`` holds the
    weighted sums of confidence minus correctness at each grid point, ``mass`` the
    weights. At bandwidth s the error is the integral of |kernel-smoothed residual|
    over the integral of the smoothed mass; it falls as s grows, and the bandwidth is
    the s where it equals s (never below SMOOTH_MIN_BANDWIDTH)."""
    coeffs = fft.dct(np.ascontiguousarray(np.asarray(residual, dtype=np.float64).T),
                     type=1, axis=1)
    # the reflected smoothing keeps the trapezoid sum of the mass
    total = _TRAPEZOID @ np.asarray(mass, dtype=np.float64)

    def excess(sigma: np.ndarray) -> np.ndarray:  # error(sigma) - sigma
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(_smoothed(coeffs, sigma)) @ _TRAPEZOID / total - sigma

    # error falls with sigma, so the root lies between the floor and the error there
    lo = np.full(len(coeffs), SMOOTH_MIN_BANDWIDTH)
    f_lo = excess(lo)
    floor = ~(f_lo > 0)  # calibrated beyond what the grid resolves, or no weight
    at_floor = f_lo + lo
    hi = np.minimum(lo + np.where(floor, 1.0, f_lo), 1.0)
    f_hi = excess(hi)
    for _ in range(_ROOT_STEPS):  # Illinois (regula falsi that halves a stale end)
        if not np.any(np.abs(f_hi[~floor]) > _ROOT_TOLERANCE):
            break
        with np.errstate(invalid="ignore", divide="ignore"):
            mid = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        mid = np.where(np.isfinite(mid), np.clip(mid, np.minimum(lo, hi),
                                                 np.maximum(lo, hi)), hi)
        f_mid = excess(mid)
        swap = (f_mid > 0) != (f_hi > 0)
        lo, f_lo = np.where(swap, hi, lo), np.where(swap, f_hi, 0.5 * f_lo)
        hi, f_hi = mid, f_mid
    sigma = np.where(floor, SMOOTH_MIN_BANDWIDTH, hi)
    return np.where(floor, at_floor, f_hi + sigma), sigma


@dataclass(frozen=True)
class SmoothReliability:
    """The smooth ECE and its kernel reliability curve on the SMOOTH_GRID grid."""

    value: float  # smooth ECE
    bandwidth: float
    confidence: np.ndarray  # the grid, 0 .. 1
    accuracy: np.ndarray  # the smoothed accuracy at each confidence
    density: np.ndarray  # the smoothed density of the confidences (integrates to 1)

    @property
    def supported(self) -> np.ndarray:
        """Where there are images to speak of (the density at least SUPPORTED of its
        peak): beyond, the smoothed accuracy extrapolates from far-away images."""
        return self.density >= SUPPORTED * np.nanmax(self.density)


def smooth_reliability(conf: np.ndarray, hits: np.ndarray,
                       bandwidth: float | None = None) -> SmoothReliability:
    """Smooth ECE of confidences against correctness (0/1), with the smoothed accuracy
    curve at its own bandwidth (or at ``bandwidth``)."""
    conf = np.asarray(conf, dtype=np.float64)
    hits = np.asarray(hits, dtype=np.float64)
    residual = _on_grid(conf, conf - hits)
    mass = _on_grid(conf, np.ones_like(conf))
    value, sigma = (float(x[0]) for x in smooth_ece_from_grid(residual, mass))
    if bandwidth is not None:
        sigma = float(bandwidth)
    smoothed_r, smoothed_m = smooth_rows(np.vstack([residual.T, mass.T]), sigma)
    grid = np.linspace(0.0, 1.0, SMOOTH_GRID)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = grid - smoothed_r / smoothed_m
    density = smoothed_m / (_TRAPEZOID @ smoothed_m / (SMOOTH_GRID - 1))
    return SmoothReliability(value, sigma, grid, accuracy, density)


def smooth_ece(probs: np.ndarray, labels: np.ndarray) -> float:
    """Smooth ECE of the top-label confidence (Blasiok & Nakkiran, 2023)."""
    probs, labels = _check(probs, labels)
    return smooth_reliability(*top_label(probs, labels)).value


# --- debiased L2 calibration error (Kumar, Liang & Ma, 2019) -----------------------------
def debiased_l2_from_bins(count: np.ndarray, hits: np.ndarray, conf: np.ndarray,
                          total: float) -> np.ndarray:
    """The debiased L2 calibration error from per-bin sums (bins x columns): each bin's
    squared gap between mean confidence and accuracy, less the accuracy's sampling
    variance acc (1 - acc) / (n_b - 1) (a bin of fewer than 2 images adds 0), weighted
    by the bin's share; the root of the sum clipped at 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = hits / count
        gap = conf / count - acc
        term = np.where(count >= 2, gap**2 - acc * (1.0 - acc) / (count - 1.0), 0.0)
    return np.sqrt(np.maximum((count * term).sum(axis=0) / total, 0.0))


def _equal_count_bins(conf: np.ndarray, hits: np.ndarray, n_bins: int):
    order = np.argsort(conf, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(conf))) if len(g)]
    return (np.array([len(g) for g in groups], dtype=np.float64),
            np.array([hits[g].sum() for g in groups]), np.array([conf[g].sum() for g in groups]))


def debiased_l2_calibration_error(probs: np.ndarray, labels: np.ndarray,
                                  n_bins: int = 15) -> float:
    """Top-label L2 calibration error over equal-count bins with each bin's sampling
    noise subtracted (Kumar et al., 2019): far less biased than the plug-in on small
    test sets."""
    probs, labels = _check(probs, labels)
    return debiased_l2_of_confidence(*top_label(probs, labels), n_bins)


def debiased_l2_of_confidence(conf: np.ndarray, hits: np.ndarray, n_bins: int = 15) -> float:
    """``debiased_l2_calibration_error`` of top-label confidences against correctness."""
    conf, hits = np.asarray(conf, dtype=np.float64), np.asarray(hits, dtype=np.float64)
    count, hit_sum, conf_sum = _equal_count_bins(conf, hits, n_bins)
    return float(debiased_l2_from_bins(count, hit_sum, conf_sum, len(conf)))


def confidence_histogram(probs: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Counts of top-label confidence in the same equal-width bins as the diagram."""
    return histogram_of_confidence(np.asarray(probs, dtype=np.float64).max(axis=1), n_bins)


def histogram_of_confidence(conf: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """``confidence_histogram`` of top-label confidences."""
    return np.bincount(bin_index(np.asarray(conf, dtype=np.float64), n_bins), minlength=n_bins)


_GROUP_ROWS = 8192  # rows of a block that class_means sums by class


def mean_prediction_matrix(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row c: the mean predicted distribution over validation samples of true class c."""
    return class_means(probs, labels, num_classes)


def class_means(rows: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row c: the mean of the rows of class c (NaN for a class with none)."""
    rows, labels = _check(rows, labels)
    counts = np.bincount(labels, minlength=num_classes)
    # rows in class order (a stable sort), a block at a time, each class's run in a block
    # summed at once: no copy of the whole matrix in that order (178 MB at 135,000 x
    # 165, whose fresh pages made it 0.26 s of an epoch end beside the other fits)
    order = np.argsort(labels, kind="stable")
    ranked = labels[order]
    sums = np.zeros((num_classes, rows.shape[1]))
    for at in range(0, len(order), _GROUP_ROWS):
        block = ranked[at:at + _GROUP_ROWS]
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        sums[block[starts]] += np.add.reduceat(rows[order[at:at + _GROUP_ROWS]], starts,
                                               axis=0)
    counts = counts[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class Confusion:
    """One off-diagonal cell of a confusion matrix: images of ``true`` predicted as
    ``predicted``."""

    true: int
    predicted: int
    count: int
    share_of_true: float  # of the true class's images
    share_of_errors: float  # of all misclassified images


def top_confusions(counts: np.ndarray, limit: int | None = None) -> list[Confusion]:
    """The confusion matrix's errors (rows true, columns predicted), most images first;
    equal counts rank the larger share of the true class first, then by class order."""
    counts = np.asarray(counts, dtype=np.int64)
    errors = counts.copy()
    np.fill_diagonal(errors, 0)
    true, predicted = np.nonzero(errors)
    n = errors[true, predicted]
    share = n / counts.sum(axis=1)[true]
    order = np.lexsort((predicted, true, -share, -n))[:limit]
    total = int(n.sum())
    return [Confusion(int(true[i]), int(predicted[i]), int(n[i]), float(share[i]),
                      float(n[i]) / total) for i in order.tolist()]


@dataclass(frozen=True)
class Separation:
    """How well an embedding separates classes: higher silhouette and lower ratio are better."""

    silhouette: float  # in [-1, 1]
    intra_inter_ratio: float  # mean intra-class distance / mean inter-class distance


def _pairwise_distances(x: np.ndarray, gram: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows; ``gram``: x x' of the rows about any point."""
    gram = x @ x.T if gram is None else gram
    squared = np.diag(gram)
    d2 = squared[:, None] + squared[None, :] - 2.0 * gram
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.maximum(d2, 0.0))


def embedding_separation(features: np.ndarray, labels: np.ndarray,
                         gram: np.ndarray | None = None) -> Separation:
    """Silhouette score (Rousseeuw 1987, Euclidean; singletons score 0, as scikit-learn)
    and the intra/inter mean-distance ratio of an embedding. ``gram``: the features'
    Gram matrix about any point (their mean, say), where one is at hand."""
    x = np.asarray(features, dtype=np.float64)
    _, labels = np.unique(np.asarray(labels), return_inverse=True)
    k = labels.max() + 1 if len(labels) else 0
    if k < 2 or len(labels) < 3:
        return Separation(float("nan"), float("nan"))
    dist = _pairwise_distances(x, gram)
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
