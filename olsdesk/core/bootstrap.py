"""Percentile-bootstrap confidence intervals for every evaluation metric, vectorised.

A bootstrap resample draws N images with replacement; image i then appears ``w_i``
times. Every metric olsdesk reports is a function of weighted sums over images, so a
block of resamples is one matrix ``W`` (images x resamples, counts from ``bincount``)
and each metric over all resamples is a few matrix products or grouped sums over it:
no Python loop over resamples. The weights depend only on (N, resamples, seed), so two
models scored on the same test images with the same seed see the same resamples: their
per-resample differences are a paired bootstrap.

``metric_samples`` gives each metric's value on every resample; ``percentile_ci`` turns
those into a 95 % interval (``interval`` centres a calibration error's on its value).
Definitions of the metrics: docs/ALGORITHMS.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

from olsdesk.core import calibration
from olsdesk.core.metrics import (
    SMOOTH_GRID,
    debiased_l2_from_bins,
    smooth_ece_from_grid,
    smooth_grid_weights,
    smooth_rows,
)

_EPS = 1e-12
# metrics of the whole test set: metrics.json, the study's test table
SUMMARY_METRICS = ("top1", "top5", "nll", "brier", "ece", "mce", "adaptive_ece",
                   "classwise_ece", "smooth_ece", "l2_ce_debiased", "macro_auroc",
                   "balanced_accuracy", "aurc", "eaurc")
# plug-in calibration errors: a resample repeats images, which makes their bins noisier,
# so the resamples sit above the value; their interval is centred on it (``interval``)
CALIBRATION_ERRORS = ("ece", "mce", "adaptive_ece", "classwise_ece", "smooth_ece",
                      "l2_ce_debiased")
# metrics of one class against the rest: per_class.csv
CLASS_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auroc", "average_precision")
BLOCK_BYTES = 64 * 2**20  # memory of one block of resample weights
# the blocks of resample weights scored at once hold at most this much: a thread scores
# a block, and on 16 cores 16 blocks of 200,000 images' weights were 1 GB
SCORING_BYTES = 256 * 2**20
# AUROC and AP are resampled exactly while that gathers at most this many image rows in
# all (images scoring above a class's lowest positive x classes x resamples, about 3 s
# on 2 cores); beyond it, to first order (influence functions, as DeLong's variance)
EXACT_RANK_BUDGET = 200_000_000
# numpy's products, gathers and running sums release the GIL: blocks of resamples are
# scored on every core
_THREADS = os.cpu_count() or 1


def _block_size(n: int) -> int:
    """Resamples a block: a function of n alone, so the weights never depend on the
    machine's core count."""
    return max(1, min(250, BLOCK_BYTES // (4 * max(n, 1))))


def _block_threads(n: int) -> int:
    """Threads that score blocks of resamples at once: as many as SCORING_BYTES holds
    blocks of n images' weights (4 at 200,000 images; the core count caps it)."""
    return max(1, SCORING_BYTES // (4 * max(n, 1) * _block_size(n)))


def resample_block(n: int, resamples: int, seed: int, block: int) -> np.ndarray:
    """Block ``block`` of the resample weights: a float32 array (exact counts) of n rows
    (images) and one column per resample, each column the multiplicity of every image
    in one bootstrap resample (summing to n). Fixed by (n, resamples, seed, block)."""
    size = _block_size(n)
    cols = min(size, resamples - block * size)
    rng = np.random.default_rng([seed, block])
    # int32 draws are int64's, value for value (numpy draws both from 32-bit words below
    # 2**32), drawn a resample at a time (the same stream as all at once) and counted
    # into its column: no cols x n draws or counts held (at 200,000 images a block's
    # temporaries were 330 MB as int64, 130 MB as int32 draws all at once)
    weights = np.empty((n, cols), dtype=np.float32)
    for col in range(cols):
        weights[:, col] = np.bincount(rng.integers(0, n, size=n, dtype=np.int32),
                                      minlength=n)
    return weights


def _parallel(fn, items, threads: int | None = None) -> list:
    """``[fn(x) for x in items]`` on every core, or on ``threads`` of them (numpy
    releases the GIL in the work)."""
    items = list(items)
    threads = _THREADS if threads is None else max(1, min(threads, _THREADS))
    if threads == 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads, thread_name_prefix="bootstrap") as pool:
        return list(pool.map(fn, items))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values (NaNs ignored)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return (float(lo), float(hi))


def interval(metric: str, value: float, samples: np.ndarray,
             level: float = 0.95) -> tuple[float, float]:
    """The 95 % interval of ``metric``: the resamples' percentile interval, for a
    calibration error shifted by the resamples' median excess over ``value`` (so that it
    describes how much the estimate varies, centred on it, instead of sitting above it;
    never below 0). The upward bias of the estimator itself is not corrected: smooth
    ECE and the debiased L2 error are the estimators with less of it."""
    lo, hi = percentile_ci(samples, level)
    if metric not in CALIBRATION_ERRORS or not np.isfinite(value):
        return (lo, hi)
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (lo, hi)
    shift = float(np.median(finite)) - float(value)
    return (max(lo - shift, 0.0), max(hi - shift, 0.0))


_INDEX = np.int32  # image indices kept for the resamples (test sets under 2**31 images)


class _Groups:
    """Rows of a weight block summed by a per-image group id (class, bin...): one gather
    and one ``reduceat`` instead of a one-hot matrix product."""

    def __init__(self, ids: np.ndarray, size: int) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.size = size
        self.order = np.argsort(ids, kind="stable").astype(_INDEX)
        sorted_ids = ids[self.order]
        self.present, self.starts = np.unique(sorted_ids, return_index=True)

    def sums(self, w: np.ndarray, values: np.ndarray | None = None,
             rows: np.ndarray | None = None) -> np.ndarray:
        """(size x resamples) sums of ``w`` (times ``values``, per image) by group; with
        ``rows``, the ids belong to those rows of ``w`` (gathered once, here)."""
        out = np.zeros((self.size, w.shape[1]), dtype=w.dtype)
        if len(self.order):
            picked = w[self.order if rows is None else rows[self.order]]
            if values is not None:
                picked *= values[self.order, None]
            out[self.present] = np.add.reduceat(picked, self.starts, axis=0)
        return out


def exact_rank_cost(scores: np.ndarray, positive: np.ndarray) -> int:
    """``_RankCurves(scores, positive).exact_cost`` without building the curves: the
    positives, and the negatives scoring at least the lowest positive."""
    if not positive.any():
        return 0
    lowest = scores[positive].min()
    return int(positive.sum() + np.count_nonzero((scores >= lowest) & ~positive))


class _RankCurves:
    """One class against the rest: AUROC and average precision for weighted images.

    The positives' distinct scores u_0 < ... < u_{M-1} cut the score axis into segments:
    2i (strictly between u_{i-1} and u_i) and 2i+1 (equal to u_i). Both metrics need only
    the negatives' weight in each segment and the positives' weight at each u_i.

    ``scores(w)`` is exact: a block of resamples costs one gather of the negatives that
    score above the lowest positive (those below it are the rest of the negative
    weight). ``influence()`` is each image's first-order effect on both metrics, for
    test sets where the exact way would take too long (see ``_Scorer``)."""

    def __init__(self, scores: np.ndarray, positive: np.ndarray) -> None:
        self.u = np.unique(scores[positive])
        m = len(self.u)
        self.m = m
        # indices kept as int32 (a class's are two of N; 165 classes' int64 were 528 MB
        # at 200,000 images)
        self.pos_idx = np.flatnonzero(positive).astype(_INDEX)
        self.pos_group = np.searchsorted(self.u, scores[self.pos_idx]).astype(_INDEX)
        self.pos_groups = _Groups(self.pos_group, m)
        neg_idx = np.flatnonzero(~positive).astype(_INDEX)
        self.all_neg_idx = neg_idx
        if m:
            i = np.searchsorted(self.u, scores[neg_idx], side="left")
            tie = (i < m) & (self.u[np.minimum(i, m - 1)] == scores[neg_idx])
            self.segment = (2 * i + tie).astype(_INDEX)
        else:
            self.segment = np.zeros(len(neg_idx), dtype=_INDEX)
        above = self.segment > 0
        self.neg_idx = neg_idx[above]
        self.neg_groups = _Groups(self.segment[above], 2 * m + 1)

    @property
    def exact_cost(self) -> int:
        """Rows gathered for every resample by the exact way."""
        return len(self.neg_idx) + len(self.pos_idx)

    def _curves(self, pos: np.ndarray, neg: np.ndarray):
        """AUROC, AP and the per-group precision from group weights (groups x resamples)."""
        w_pos = pos.sum(axis=0)
        w_neg = neg.sum(axis=0)
        below = np.cumsum(neg, axis=0)[0::2][: self.m]  # strictly below u_i
        tied = neg[1::2]
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc = (pos * (below + 0.5 * tied)).sum(axis=0) / (w_pos * w_neg)
            true_pos = w_pos - np.vstack([np.zeros((1, pos.shape[1])),
                                          np.cumsum(pos, axis=0)[:-1]])
            shown = true_pos + w_neg - below  # weight scoring at least u_i
            precision = np.where(true_pos > 0, true_pos / shown, 0.0)
            ap = (pos * precision).sum(axis=0) / w_pos
        auroc = np.where((w_pos == 0) | (w_neg == 0), np.nan, auroc)
        ap = np.where(w_pos == 0, np.nan, ap)
        return auroc, ap, precision, shown, below, tied

    def scores(self, w: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(AUROC, average precision) on every resample of the block; NaN where a
        resample has no positive (AP, AUROC) or no negative (AUROC). ``total``: the
        weight of all images in each resample."""
        if self.m == 0:
            nan = np.full(w.shape[1], np.nan)
            return nan, nan
        pos = self.pos_groups.sums(w, rows=self.pos_idx).astype(np.float64)
        neg = self.neg_groups.sums(w, rows=self.neg_idx).astype(np.float64)
        neg[0] = total - pos.sum(axis=0) - neg[1:].sum(axis=0)
        return self._curves(pos, neg)[:2]

    def influence(self, n: int) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(AUROC, AP, and each image's derivative of both with respect to its weight
        at weight 1): resample r's value is then about value + influence . (w_r - 1)."""
        auroc_if, ap_if = np.zeros(n), np.zeros(n)
        n_pos, n_neg = len(self.pos_idx), len(self.all_neg_idx)
        if self.m == 0 or n_neg == 0:
            return float("nan"), float("nan"), auroc_if, ap_if
        pos = np.bincount(self.pos_group, minlength=self.m).astype(np.float64)[:, None]
        neg = np.bincount(self.segment, minlength=2 * self.m + 1).astype(np.float64)[:, None]
        auroc, ap, precision, shown, below, tied = (x[..., 0] if x.ndim > 1 else x[0]
                                                    for x in self._curves(pos, neg))
        auroc, ap = float(auroc), float(ap)
        pos = pos[:, 0]
        # AUROC: the placement values (DeLong's structural components)
        auroc_if[self.pos_idx] = ((below + 0.5 * tied)[self.pos_group] / n_neg - auroc) / n_pos
        above = n_pos - np.cumsum(pos)  # positives strictly above u_i
        seg = self.segment
        group = seg // 2
        pos_above = np.where(seg % 2 == 1, above[np.minimum(group, self.m - 1)]
                             + 0.5 * pos[np.minimum(group, self.m - 1)],
                             np.concatenate([[n_pos], above])[group])
        auroc_if[self.all_neg_idx] = (pos_above / n_pos - auroc) / n_neg
        # AP = sum_i prec_i / n_pos over positives; prec_i = TP(>= s_i) / all(>= s_i)
        inv = np.cumsum(pos / shown)  # sum over positives with u_g <= s of 1 / all(>= u_g)
        prec_inv = np.cumsum(pos * precision / shown)
        # groups g with u_g <= s: for a positive in group i, i + 1; for a negative, by segment
        upto_pos = self.pos_group
        upto_neg = (seg + 1) // 2 - 1  # segment 2i -> i - 1, segment 2i+1 -> i
        for idx, last, is_pos in ((self.pos_idx, upto_pos, 1.0),
                                  (self.all_neg_idx, upto_neg, 0.0)):
            has = last >= 0
            safe = np.maximum(last, 0)
            term = np.where(has, is_pos * inv[safe] - prec_inv[safe], 0.0)
            if is_pos:
                term = term + precision[last] - ap
            ap_if[idx] = term / n_pos
        return auroc, ap, auroc_if, ap_if


@dataclass
class BootstrapResult:
    """Each metric's value on the test images and on every resample."""

    value: dict[str, float]  # SUMMARY_METRICS -> value
    class_value: dict[str, np.ndarray]  # CLASS_METRICS -> (classes,)
    summary: dict[str, np.ndarray]  # SUMMARY_METRICS -> (resamples,)
    per_class: dict[str, np.ndarray]  # CLASS_METRICS -> (classes, resamples)
    rank_method: str  # how AUROC and AP were resampled: "exact", "linearised" or "skipped"

    def interval(self, metric: str) -> tuple[float, float]:
        return interval(metric, self.value[metric], self.summary[metric])

    def class_intervals(self, metric: str) -> list[tuple[float, float]]:
        return [percentile_ci(row) for row in self.per_class[metric]]


COLUMN_VALUES = 2**20  # values of an N x resamples temporary at once (4 MB of float32)


def _column_chunks(w: np.ndarray) -> list[slice]:
    """Slices of ``w``'s columns (resamples) of about COLUMN_VALUES values each: what
    needs several N-long running sums a resample takes a few resamples at a time."""
    step = max(1, COLUMN_VALUES // max(len(w), 1))
    return [slice(at, at + step) for at in range(0, w.shape[1], step)]


def _row_chunked(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    """Per image: whether its label is among its top 5, its Brier score; per (image,
    class) whose probability falls above the first classwise bin: the image, the class
    and the bin. Computed a block of rows at a time, so no N x K temporary is made
    (at 200,000 x 165 they were five of 252 MB each)."""
    n, k = probs.shape
    step = max(1, calibration.ROW_BLOCK_VALUES // max(k, 1))
    top5, brier = np.empty(n, dtype=bool), np.empty(n)
    found_i, found_k, found_bin = [], [], []
    for at in range(0, n, step):
        p, y = probs[at:at + step], labels[at:at + step]
        rows = np.arange(len(p))
        top = np.argpartition(-p, min(5, k) - 1, axis=1)[:, : min(5, k)]
        top5[at:at + step] = np.any(top == y[:, None], axis=1)
        gap = p.copy()
        gap[rows, y] -= 1.0
        brier[at:at + step] = np.einsum("ij,ij->i", gap, gap)
        cls_bin = np.clip(np.ceil(p * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        i, c = np.nonzero(cls_bin > 0)
        found_i.append(i + at)
        found_k.append(c)
        found_bin.append(cls_bin[i, c])
    return (top5, brier, *(np.concatenate(a) if a else np.empty(0, dtype=np.int64)
                           for a in (found_i, found_k, found_bin)))


class _Scorer:
    """Everything about (probs, labels) that does not depend on the resample, prepared
    once; ``block(w)`` scores a block of resamples."""

    def __init__(self, probs: np.ndarray, labels: np.ndarray, n_bins: int,
                 per_class: bool, resamples: int, ranks: bool = True) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        n, k = probs.shape
        self.n, self.k, self.n_bins = n, k, n_bins
        rows = np.arange(n)
        conf = probs.max(axis=1)
        pred = probs.argmax(axis=1)
        hit = (pred == labels).astype(np.float64)
        top5, brier, hi_i, hi_k, hi_bin = _row_chunked(probs, labels, n_bins)
        per_image = np.column_stack([
            hit, top5, -np.log(np.clip(probs[rows, labels], _EPS, None)), brier])
        self.hit, self.conf = hit, conf
        self.selective = Selective(conf, hit)
        # equal-count bins: images in confidence order
        self.conf_order = np.argsort(conf, kind="stable")
        sizes = [len(g) for g in np.array_split(np.arange(n), min(n_bins, n))]
        self.adaptive_edges = np.concatenate([[0], np.cumsum(sizes)]).astype(np.float64)
        # Every grouped weighted sum, as the rows of one sparse matrix (one product a
        # block): top-label bins (count, hits, confidence), classes by label (count, hits),
        # by prediction (count), and classwise-ECE bins above the first (confidence,
        # hits), which are sparse because a row's probabilities sum to 1.
        top_bin = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        hi_group = hi_k * n_bins + hi_bin
        # smooth ECE: each image's residual (confidence - correctness) and weight split
        # between its two nearest points of the smoothing grid
        lower, lo_share, hi_share = smooth_grid_weights(conf)
        grid_point, grid_image = np.r_[lower, lower + 1], np.r_[rows, rows]
        grid_share = np.r_[lo_share, hi_share]
        residual = np.r_[conf - hit, conf - hit]
        blocks = [("bin_count", n_bins, top_bin, rows, np.ones(n)),
                  ("bin_hit", n_bins, top_bin, rows, hit),
                  ("bin_conf", n_bins, top_bin, rows, conf),
                  ("support", k, labels, rows, np.ones(n)),
                  ("true_pos", k, labels, rows, hit),
                  ("predicted", k, pred, rows, np.ones(n)),
                  ("cw_conf", k * n_bins, hi_group, hi_i, probs[hi_i, hi_k]),
                  ("cw_hit", k * n_bins, hi_group, hi_i, (labels[hi_i] == hi_k) * 1.0),
                  ("grid_residual", SMOOTH_GRID, grid_point, grid_image, grid_share * residual),
                  ("grid_mass", SMOOTH_GRID, grid_point, grid_image, grid_share)]
        self.slices, r_idx, c_idx, vals, start = {}, [], [], [], 0
        for name, size, group, image, value in blocks:
            self.slices[name] = slice(start, start + size)
            r_idx.append(group + start)
            c_idx.append(image)
            vals.append(value)
            start += size
        grouped = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))),
            shape=(start, n))
        # float64 for the values on the test images; float32 for the resamples (counts are
        # exact, sums carry ~1e-7 relative rounding, far below any interval's width, and
        # the products run twice as fast)
        # (the probabilities as they are, N x K: the float64 ones are the caller's, no copy)
        self.by_dtype = {np.dtype(t): (grouped.astype(t), per_image.astype(t),
                                       probs.astype(t, copy=False))
                         for t in (np.float64, np.float32)}
        self.want_per_class = per_class
        self.curves: list[_RankCurves] = []
        cost = sum(exact_rank_cost(probs[:, c], labels == c) for c in range(k)) * resamples
        self.rank_method = ("skipped" if not ranks else
                            "exact" if cost <= EXACT_RANK_BUDGET else "linearised")
        if self.rank_method == "exact":
            self.curves = _parallel(lambda c: _RankCurves(probs[:, c], labels == c), range(k))
        elif self.rank_method == "linearised":
            # a class's curves built, its influences written into its column, the curves
            # dropped: 165 classes' curves held at once were 4 int32 arrays of N each
            # (528 MB at 200,000 images), their float64 influences as much again
            self.rank_value = np.empty((2, k))
            self.rank_influence = (np.empty((n, k), np.float32, order="F"),
                                   np.empty((n, k), np.float32, order="F"))

            def influence(c: int) -> None:
                auroc, ap, auroc_if, ap_if = _RankCurves(probs[:, c], labels == c).influence(n)
                self.rank_value[:, c] = auroc, ap
                self.rank_influence[0][:, c], self.rank_influence[1][:, c] = auroc_if, ap_if

            _parallel(influence, range(k))

    def _rank_scores(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(AUROC, AP), classes x resamples (NaN when skipped)."""
        if self.rank_method == "skipped":
            nan = np.full((self.k, w.shape[1]), np.nan)
            return nan, nan
        if self.rank_method == "exact":
            total = np.full(w.shape[1], float(self.n))  # every resample holds n images
            auroc, ap = zip(*(c.scores(w, total) for c in self.curves), strict=True)
            return np.vstack(auroc), np.vstack(ap)
        # the weights' last use in ``block``: float32 ones (a resample block) shifted in
        # place, not copied (64 MB a thread at 200,000 images)
        shift = (np.subtract(w, 1.0, out=w) if w.dtype == np.float32
                 else (w - 1.0).astype(np.float32))
        return tuple(value[:, None] + (influence.T @ shift).astype(np.float64)
                     for value, influence in zip(self.rank_value, self.rank_influence,
                                                 strict=True))

    def block(self, w: np.ndarray) -> tuple[dict, dict]:
        """Every metric on each column of ``w`` (float64 or float32 image weights; float32
        ones are used up: their last use shifts them in place)."""
        n, k, nb = self.n, self.k, self.n_bins
        grouped, per_image, probs = self.by_dtype[w.dtype]
        summed = (grouped @ w).astype(np.float64)
        part = {name: summed[sl] for name, sl in self.slices.items()}
        summary: dict[str, np.ndarray] = {}
        means = (per_image.T @ w).astype(np.float64) / n
        for name, row in zip(("top1", "top5", "nll", "brier"), means, strict=True):
            summary[name] = row
        counts = part["bin_count"]
        gaps = np.abs(part["bin_hit"] - part["bin_conf"])
        summary["ece"] = gaps.sum(axis=0) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            summary["mce"] = np.where(counts > 0, gaps / counts, 0.0).max(axis=0)
        hits, confs = self._equal_count_sums(w)
        summary["adaptive_ece"] = np.abs(hits - confs).sum(axis=0) / n
        summary["l2_ce_debiased"] = debiased_l2_from_bins(
            np.diff(self.adaptive_edges)[:, None], hits, confs, n)
        summary["smooth_ece"] = smooth_ece_from_grid(part["grid_residual"],
                                                     part["grid_mass"])[0]
        support, true_pos = part["support"], part["true_pos"]
        # classwise ECE: the first bin of class c holds what the other bins do not
        cw_conf = part["cw_conf"].reshape(k, nb, -1).copy()
        cw_hit = part["cw_hit"].reshape(k, nb, -1).copy()
        cw_conf[:, 0] = (w.T @ probs).T.astype(np.float64) - cw_conf[:, 1:].sum(axis=1)
        cw_hit[:, 0] = support - cw_hit[:, 1:].sum(axis=1)
        summary["classwise_ece"] = np.abs(cw_hit - cw_conf).sum(axis=1).mean(axis=0) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            summary["balanced_accuracy"] = _nanmean(np.where(support > 0, true_pos / support,
                                                             np.nan))
        summary["aurc"], summary["eaurc"] = self.selective.aurc(w)
        auroc, ap = self._rank_scores(w)
        summary["macro_auroc"] = _nanmean(auroc)
        per_class: dict[str, np.ndarray] = {}
        if self.want_per_class:
            predicted = part["predicted"]
            false_pos = predicted - true_pos
            false_neg = support - true_pos
            true_neg = n - true_pos - false_pos - false_neg
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class["sensitivity"] = true_pos / support
                per_class["specificity"] = true_neg / (true_neg + false_pos)
                per_class["ppv"] = true_pos / predicted
                per_class["npv"] = true_neg / (true_neg + false_neg)
                per_class["f1"] = 2 * true_pos / (2 * true_pos + false_pos + false_neg)
            per_class["auroc"], per_class["average_precision"] = auroc, ap
        return summary, per_class

    def _equal_count_sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hits, confidence) summed in each equal-count bin (bins x resamples), as if
        each resample's images were listed in confidence order with repeats: a repeated
        image may straddle a bin edge, and then counts in both bins in proportion. Each
        bin's weight is its share of n, the same in every resample. A few resamples at a
        time: each needs six N-long running sums (a block's at once were 460 MB a thread
        at 200,000 images)."""
        parts = [self._equal_count_part(w[:, cols]) for cols in _column_chunks(w)]
        return np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts])

    def _equal_count_part(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = self.conf_order
        hit, conf = self.hit[order], self.conf[order]
        ws = np.ascontiguousarray(w[order].T)  # resamples x N, in confidence order
        cum_w = np.cumsum(ws, axis=1)
        cum_hit = np.cumsum(ws * hit.astype(w.dtype), axis=1)
        cum_conf = np.cumsum(ws * conf.astype(w.dtype), axis=1)
        edges = self.adaptive_edges.astype(w.dtype)
        # per resample, the image holding each edge position, and the sums before it
        t = np.vstack([np.searchsorted(row, edges, side="left") for row in cum_w])
        t = np.minimum(t, self.n - 1)
        r = np.arange(ws.shape[0])[:, None]
        prev = np.maximum(t - 1, 0)
        first = t == 0
        before_w = np.where(first, 0.0, cum_w[r, prev])
        partial = edges[None, :] - before_w
        hits = np.where(first, 0.0, cum_hit[r, prev]) + partial * hit[t]
        confs = np.where(first, 0.0, cum_conf[r, prev]) + partial * conf[t]
        return (np.diff(hits.astype(np.float64), axis=1).T,
                np.diff(confs.astype(np.float64), axis=1).T)


class Selective:
    """Selective prediction by a confidence score: the model answers the images it is
    most confident about and refers the rest. Images with equal scores are taken in every
    order alike (their errors spread evenly over their positions), so no value depends on
    how a sort breaks ties. Definitions: docs/ALGORITHMS.md."""

    def __init__(self, score: np.ndarray, correct: np.ndarray) -> None:
        score = np.asarray(score, dtype=np.float64)
        self.n = n = len(score)
        self.order = np.argsort(-score, kind="stable")
        ordered = score[self.order]
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.tied = len(self.starts) < n
        self.error = 1.0 - np.asarray(correct, dtype=np.float64)[self.order]
        self.error_rows = np.flatnonzero(self.error > 0)  # in score order
        # harmonic numbers H(m) = 1 + 1/2 + ... + 1/m (H(0) = 0) and their running sums
        # G(m) = H(0) + ... + H(m - 1)
        self.harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
        self.g = np.concatenate([[0.0], np.cumsum(self.harmonic[:-1])])

    def _groups(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per tie group (score order) and resample column: its weight and its errors."""
        ws = w[self.order]  # counts: exact in float32, summed per group exactly too
        weight = np.add.reduceat(ws, self.starts, axis=0).astype(np.float64)
        errors = np.add.reduceat(ws * self.error[:, None].astype(w.dtype), self.starts,
                                 axis=0).astype(np.float64)
        return weight, errors

    def aurc(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(AURC, E-AURC) of each column of image weights ``w`` (counts summing to n).

        N x AURC = sum over positions p of errors(p) / p = sum over the positions q that
        hold an error of H(N) - H(q - 1). An image (or a group of tied images) of weight
        W after C_b others fills positions C_b+1 .. C_b+W, which add W H(N) - (G(C_b + W)
        - G(C_b)) for each error among them: a tied group's errors spread evenly over its
        positions, so it adds its error rate times that. Only the errors' positions are
        needed: the rest of the sum is zero."""
        n, h, g = self.n, self.harmonic, self.g

        def tied(cols: slice) -> tuple[np.ndarray, np.ndarray]:
            weight, errors = self._groups(w[:, cols])
            after = np.rint(np.cumsum(weight, axis=0)).astype(np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(weight > 0, errors / weight, 0.0)
            span = g[after] - g[after - weight.astype(np.int64)]
            return (rate * (weight * h[n] - span)).sum(axis=0), errors.sum(axis=0)

        def untied(cols: slice) -> tuple[np.ndarray, np.ndarray]:
            ws = w[self.order, cols]
            after = np.cumsum(ws, axis=0)[self.error_rows]  # exact: integer counts
            weight = ws[self.error_rows]
            ends = after.astype(np.int64)
            span = g[ends] - g[ends - weight.astype(np.int64)]
            wrong = weight.sum(axis=0, dtype=np.float64)
            return wrong * h[n] - span.sum(axis=0), wrong

        # a few resamples at a time: a tie group's sums are several groups x resamples
        # float64 arrays (over 100 MB each for a block at 200,000 images)
        part = tied if self.tied else untied
        totals, wrongs = zip(*(part(cols) for cols in _column_chunks(w)), strict=True)
        total, wrong = np.concatenate(totals), np.concatenate(wrongs)
        aurc = total / n
        # the best a score could do: every correct answer before every error
        right = np.rint(n - wrong).astype(np.int64)
        best = ((n - right) - right * (h[n] - h[right])) / n
        return aurc, aurc - best

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(coverage k/n, selective risk at k) for k = 1 .. n, on the images as they are."""
        return self._curve

    @cached_property
    def _curve(self) -> tuple[np.ndarray, np.ndarray]:
        weight, errors = (x[:, 0] for x in self._groups(np.ones((self.n, 1))))
        k = np.arange(1, self.n + 1, dtype=np.float64)
        group = np.repeat(np.arange(len(weight)), weight.astype(np.int64))
        before = np.cumsum(weight) - weight
        errors_before = np.cumsum(errors) - errors
        expected = errors_before[group] + errors[group] / weight[group] * (k - before[group])
        return k / self.n, expected / k

    def accuracy_at(self, coverage: float) -> float:
        """Accuracy on the most confident ``coverage`` of the images (at least one)."""
        _, risk = self.curve()
        k = min(max(int(round(coverage * self.n)), 1), self.n)
        return float(1.0 - risk[k - 1])

    def referral_for(self, accuracy: float) -> float | None:
        """The smallest share of images to refer (the least confident) for the answered
        rest to reach ``accuracy``; None when no share does (the most confident answers
        are already below it)."""
        _, risk = self.curve()
        reach = np.flatnonzero(1.0 - risk >= accuracy - 1e-12)
        return None if not reach.size else float(1.0 - (reach[-1] + 1) / self.n)


def _nanmean(x: np.ndarray) -> np.ndarray:
    valid = np.isfinite(x)
    counts = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(valid, x, 0.0).sum(axis=0) / counts, np.nan)


def metric_samples(probs: np.ndarray | Callable[[], np.ndarray], labels: np.ndarray, *,
                   resamples: int = 1000, seed: int = 0, n_bins: int = 15,
                   per_class: bool = True, ranks: bool = True) -> BootstrapResult:
    """Every metric on the images and on ``resamples`` bootstrap resamples of them;
    without ``ranks``, AUROC and AP are left out (NaN): the dearest part at scale.
    ``probs``: N x K probabilities, or a function that computes them: then nothing holds
    them once the values on the images are scored, and the resamples run without them
    (252 MB of float64 at 200,000 x 165)."""
    scorer = _scorer(probs() if callable(probs) else probs, labels, n_bins, resamples, ranks)
    value, class_value = scorer.block(np.ones((scorer.n, 1)))
    # the float64 copies served that one block; the resamples are scored in float32
    del scorer.by_dtype[np.dtype(np.float64)]
    scorer.want_per_class = per_class
    n = scorer.n
    # each thread draws its block's weights and scores them: one block a thread in
    # memory, and as many threads as SCORING_BYTES holds blocks
    summaries, classes = zip(*_parallel(
        lambda b: scorer.block(resample_block(n, resamples, seed, b)),
        range(-(-resamples // _block_size(n))), _block_threads(n)), strict=True)
    summary = {m: np.concatenate([s[m] for s in summaries]) for m in SUMMARY_METRICS}
    per = ({m: np.concatenate([c[m] for c in classes], axis=1) for m in CLASS_METRICS}
           if per_class else {})
    return BootstrapResult({m: float(v[0]) for m, v in value.items()},
                           {m: v[:, 0] for m, v in class_value.items()}, summary, per,
                           scorer.rank_method)


def _scorer(probs: np.ndarray, labels: np.ndarray, n_bins: int, resamples: int,
            ranks: bool) -> _Scorer:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"probs must be N x K and labels N (N > 0); got {probs.shape} and "
                         f"{labels.shape}")
    return _Scorer(probs, labels, n_bins, per_class=True, resamples=resamples, ranks=ranks)


def mean_samples(values: np.ndarray, *, resamples: int = 1000,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(means, means on every resample) of per-image ``values`` (N, or N x m columns),
    on the same resamples as ``metric_samples`` with this seed: a coverage, a mean set
    size. Each resample's columns of weights sum to N."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    n = len(flat)
    blocks = _parallel(lambda b: (resample_block(n, resamples, seed, b).T @ flat) / n,
                       range(-(-resamples // _block_size(n))), _block_threads(n))
    return flat.mean(axis=0).reshape(values.shape[1:]), np.concatenate(blocks).reshape(
        (resamples, *values.shape[1:]))


def smooth_reliability_band(conf: np.ndarray, hits: np.ndarray, bandwidth: float,
                            resamples: int = 200, seed: int = 0,
                            level: float = 0.95) -> np.ndarray:
    """(2 x SMOOTH_GRID) pointwise ``level`` band of the smoothed accuracy curve at
    ``bandwidth``, over bootstrap resamples of the images (the same weights as
    ``metric_samples`` with this seed); NaN where the resamples have no weight."""
    conf = np.asarray(conf, dtype=np.float64)
    residual = conf - np.asarray(hits, dtype=np.float64)
    n = len(conf)
    lower, lo_share, hi_share = smooth_grid_weights(conf)
    images = np.arange(n)
    # the weights' spread onto the grid above, the residuals' below: one product a chunk
    # of resamples gives both, with no N-long product of the residuals and the weights
    spread = sparse.csr_matrix((np.r_[lo_share, hi_share, lo_share * residual,
                                      hi_share * residual],
                                (np.r_[lower, lower + 1, lower + SMOOTH_GRID,
                                       lower + 1 + SMOOTH_GRID], np.tile(images, 4))),
                               shape=(2 * SMOOTH_GRID, n))
    grid = np.linspace(0.0, 1.0, SMOOTH_GRID)
    curves = []
    for b in range(-(-resamples // _block_size(n))):
        w = resample_block(n, resamples, seed, b)
        cols = w.shape[1]
        # a few resamples at a time in float64: a block's float64 weights and their
        # product with the residuals were 256 MB at 200,000 images
        spread_residual, spread_weight = np.empty((cols, SMOOTH_GRID)), np.empty((cols, SMOOTH_GRID))
        for part in _column_chunks(w):
            both = (spread @ w[:, part].astype(np.float64)).T
            spread_weight[part], spread_residual[part] = both[:, :SMOOTH_GRID], \
                both[:, SMOOTH_GRID:]
        smoothed = smooth_rows(np.vstack([spread_residual, spread_weight]), bandwidth)
        r, m = smoothed[:cols], smoothed[cols:]
        with np.errstate(invalid="ignore", divide="ignore"):
            curves.append(np.where(m > 1e-12 * n, grid - r / m, np.nan))
    curves = np.vstack(curves)
    tail = (1.0 - level) / 2.0 * 100.0
    return column_percentiles(curves, [tail, 100.0 - tail])


def column_percentiles(values: np.ndarray, q) -> np.ndarray:
    """``np.nanpercentile(values, q, axis=0)`` (len(q) x columns), NaN for a column of
    NaN alone, without its warning. nanpercentile works a column at a time (2,049 of
    them for a band: 0.12 s); the columns with no NaN, most of them, take the vectorised
    percentile, which gives the same numbers."""
    finite = np.isfinite(values)
    out = np.full((len(q), values.shape[1]), np.nan)
    for columns, percentile in ((finite.all(axis=0), np.percentile),
                                (finite.any(axis=0) & ~finite.all(axis=0), np.nanpercentile)):
        if columns.any():
            out[:, columns] = percentile(values[:, columns], q, axis=0)
    return out
