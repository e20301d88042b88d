"""Recalibration fitted on held-out data. Temperature scaling (Guo et al., 2017): one
scalar T that minimises the NLL of softmax(logits / T). Log-probabilities work as
logits (softmax is shift-invariant), so a run's stored validation probabilities are
enough. Beside it, vector scaling (a scale and a bias per class) and histogram binning
(one class against the rest), fitted at every epoch end and compared by
``olsdesk evaluate`` on the test split."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

T_RANGE = (0.05, 20.0)


ROW_BLOCK_VALUES = 2**22  # values of an N x K temporary at once (32 MB of float64)


def by_row_blocks(fn, array: np.ndarray) -> np.ndarray:
    """``fn(array)`` for a function of each row alone (N x K in; N x ... out), computed a
    block of rows at a time into one output: the same numbers, and its temporaries
    (several N x K for a softmax, an entropy or a conformal set: over a GB at
    200,000 x 165) take 32 MB."""
    array = np.asarray(array)
    step = max(1, ROW_BLOCK_VALUES // max(array.shape[-1], 1))
    if array.ndim != 2 or len(array) <= step:
        return fn(array)
    first = fn(array[:step])
    out = np.empty((len(array), *first.shape[1:]), dtype=first.dtype)
    out[:step] = first
    for at in range(step, len(array), step):
        out[at:at + step] = fn(array[at:at + step])
    return out


def _softmax(a: np.ndarray) -> np.ndarray:
    """The softmax of each row of ``a`` (a float64 array of its own), made in place: four
    passes over it."""
    a -= a.max(axis=1, keepdims=True)
    np.exp(a, out=a)
    a /= a.sum(axis=1, keepdims=True)
    return a


_NEWTON_STEPS = 60  # at most; a fit takes 2-5 passes over the logits
_NEWTON_TOLERANCE = 1e-6  # relative width of the bracket, or of a step, at which a fit stops
# a Newton step this small (relative) ends a fit: the error after a Newton step of size s
# is about c s^2 (c, the third derivative over twice the second, is 0.2 on
# RadImageNet-shaped logits), so T is then good to about 1e-8 without the pass that
# would confirm it
_NEWTON_ACCEPT = 1e-4
# a fit on more images starts from the fit on a strided sample of about this many: a
# fraction of a pass each, and the full passes start within about 1 % of the minimum
_WARM_START_ROWS = 16_384
# rows of the shifted logits worked on at once (a pass of the fit, the cross-fit's
# confidences): their temporaries stay in the cache
_PASS_ROWS = 4096


def _shifted(logits: np.ndarray) -> np.ndarray:
    """Each row minus its maximum, as float32: softmax(b z) is unchanged for any b > 0,
    and exp(b z) of a value <= 0 cannot overflow. Floored at -1e4 (exp(b z) is 0 there
    for every b in range), so that -inf or a huge gap cannot make z * z overflow."""
    z = np.array(logits, dtype=np.float32)  # a copy of its own, then shifted in place
    z -= z.max(axis=1, keepdims=True)
    return np.maximum(z, np.float32(-1e4), out=z)


def _nll_slopes(z: np.ndarray, picked: np.ndarray, beta: float,
                rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image at inverse temperature ``beta``, the NLL's first and second derivative
    in beta: the mean of z under softmax(beta z) less z_y, and the variance of z. The
    sums over a row's classes are float32 (rounding near 1e-6 of a row's, far below
    the 1e-4 T is fitted to), what follows float64. ``rows``: those images alone.
    A block of rows at a time, whose temporaries stay in the cache: the same numbers,
    a third faster than the whole matrix at once."""
    n = len(z) if rows is None else len(rows)
    slope, curvature = np.empty(n), np.empty(n)
    b = np.float32(beta)
    for at in range(0, n, _PASS_ROWS):
        block = slice(at, at + _PASS_ROWS)
        zb = z[block] if rows is None else z[rows[block]]
        e = np.multiply(zb, b)
        np.exp(e, out=e)
        total = e.sum(axis=1).astype(np.float64)
        first = np.einsum("ij,ij->i", e, zb) / total
        e *= zb
        second = np.einsum("ij,ij->i", e, zb) / total - first**2
        slope[block] = first - (picked[block] if rows is None else picked[rows[block]])
        curvature[block] = np.maximum(second, 0.0)
    return slope, curvature


@dataclass(frozen=True)
class _Pass:
    """One pass over the logits: each image's NLL slope and curvature at ``beta``."""

    beta: float
    slope: np.ndarray
    curvature: np.ndarray


def _fit_beta(slopes: Callable[[float], tuple[np.ndarray, np.ndarray]], beta: float = 1.0,
              start: _Pass | None = None) -> tuple[float, _Pass]:
    """The inverse temperature in 1/T_RANGE minimising the mean NLL of softmax(beta z),
    and the fit's last pass over the logits (``slopes(beta)``: their ``_nll_slopes``).
    ``start``: a pass already made, where the fit starts instead of at ``beta``.

    Newton's method on a convex function of beta, inside a bracket that every step's
    slope narrows. A step that would leave the bracket, or that shrinks less than half
    as fast as the one before (the NLL flattens exponentially when its minimum lies
    beyond the range), tries the range's end on the downhill side once, and bisects
    the bracket (in log beta) after that.
    """
    lo, hi = 1.0 / T_RANGE[1], 1.0 / T_RANGE[0]
    last = start
    beta = start.beta if start is not None else min(max(beta, lo), hi)
    untried = {lo, hi}
    last_step = hi - lo
    for _ in range(_NEWTON_STEPS):
        untried.discard(beta)
        if last is None or last.beta != beta:
            last = _Pass(beta, *slopes(beta))
        g, h = float(last.slope.mean()), float(last.curvature.mean())
        if g == 0.0:  # the minimum, or every row flat (any T is as good)
            return beta, last
        if g > 0:
            hi = beta
        else:
            lo = beta
        if hi - lo <= _NEWTON_TOLERANCE * lo:
            return beta, last
        step = beta - g / h if h > 0 else np.nan
        if lo < step < hi and 2.0 * abs(step - beta) <= last_step:
            if abs(step - beta) <= _NEWTON_ACCEPT * beta:
                return step, last  # a Newton step: its error is far smaller than itself
        else:
            end = hi if g < 0 else lo
            step = end if end in untried else float(np.sqrt(lo * hi))
        if abs(step - beta) <= _NEWTON_TOLERANCE * beta:
            return step, last
        last_step, beta = abs(step - beta), step
    return beta, last


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and what its fit computed on the way, which the cross-fit
    reuses: the shifted float32 logits, each image's shifted logit of its label, and the
    fit's last pass (each image's NLL slope and curvature there)."""

    temperature: float
    z: np.ndarray = field(repr=False)  # N x K float32, each row's maximum 0
    picked: np.ndarray = field(repr=False)  # N float64
    last: _Pass = field(repr=False)


def temperature_fit(logits: np.ndarray, labels: np.ndarray) -> TemperatureFit:
    """``fit_temperature``, with what its fit computed (``TemperatureFit``)."""
    z = _shifted(logits)
    picked = z[np.arange(len(labels)), np.asarray(labels).astype(np.int64)].astype(np.float64)
    beta = 1.0
    stride = len(z) // _WARM_START_ROWS
    if stride >= 4:  # the sample's fit, then Newton's steps from near the minimum
        beta, _ = _fit_beta(lambda b: _nll_slopes(z[::stride], picked[::stride], b))
    beta, last = _fit_beta(lambda b: _nll_slopes(z, picked, b), beta)
    return TemperatureFit(1.0 / beta, z, picked, last)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_RANGE minimising validation NLL. The NLL is convex in 1/T: a
    safeguarded Newton solve on 1/T finds it in a few passes over the logits (at the
    range's end when the minimum lies beyond)."""
    return temperature_fit(logits, labels).temperature


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) as probabilities."""
    return by_row_blocks(
        lambda z: _softmax(np.divide(z, temperature, dtype=np.float64)), logits)


def cross_fitted_confidence(fit: TemperatureFit, seed: int = 0) -> np.ndarray:
    """The top-label confidence after temperature scaling, where no image is scaled by a
    T fitted on itself (the predicted class does not change with T), from the whole
    set's ``fit`` (``temperature_fit``).

    The images are split in two random halves; T fitted on one half scales the other,
    and the other way round. The calibration measured on the result is an honest
    estimate of what scaling does for new images (fitting and measuring on the same
    images flatters it). With fewer than 4 images, the in-sample fit is used. Each
    half's fit starts from the whole set's last pass (its images' slopes there give the
    first step), so it takes one pass of its own or none.
    """
    z, picked, last = fit.z, fit.picked, fit.last
    n = len(picked)
    if n < 4:
        halves = [(np.arange(n), np.arange(n))]
    else:
        order = np.random.default_rng(seed).permutation(n)
        halves = [(order[: n // 2], order[n // 2:]), (order[n // 2:], order[: n // 2])]
    confidence = np.empty(n)
    for fit_on, apply_to in halves:
        half_beta, _ = _fit_beta(
            lambda b, rows=fit_on: _nll_slopes(z, picked, b, rows),
            start=_Pass(last.beta, last.slope[fit_on], last.curvature[fit_on]))
        beta = np.float32(half_beta)
        for at in range(0, len(apply_to), _PASS_ROWS):  # the top class's z is 0: its
            rows = apply_to[at:at + _PASS_ROWS]  # probability is 1 / sum(exp(beta z))
            confidence[rows] = 1.0 / np.exp(beta * z[rows]).sum(axis=1, dtype=np.float64)
    return confidence


# --- recalibrators beyond one temperature ------------------------------------------------
VECTOR_RIDGE = 1e-3  # pull of each scale toward 1/T and each bias toward 0
_VECTOR_STEPS = 50  # Newton steps at most (6-10 from the temperature)
_VECTOR_TOLERANCE = 1e-14  # the Newton decrement at which a fit stops
_VECTOR_ACCEPT = 1e-8  # a full Newton step of a decrement this small is the last
# vector scaling is fitted on at most this many validation images, every image of a class
# with few and an equal share of each larger class, weighted back to the class counts
# (the objective is then the full set's in expectation; docs/PERFORMANCE.md measures it)
VECTOR_FIT_IMAGES = 10_000


def stratified_sample(labels: np.ndarray, limit: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, weights): at most ``limit`` rows, all of a class with fewer than a cap and
    ``cap`` random ones of each other class (the cap as large as ``limit`` allows), each
    weighted by its class's count over its rows, so weighted sums estimate the full
    sums. Every row, weight 1, when there are no more than ``limit``."""
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)
    if n <= limit:
        return np.arange(n), np.ones(n)
    counts = np.bincount(labels)
    present = np.sort(counts[counts > 0])
    # the largest cap with sum(min(count, cap)) <= limit
    taken = np.cumsum(present)
    cap = 1
    for i, c in enumerate(present):
        remaining = len(present) - i
        below = taken[i - 1] if i else 0
        if below + c * remaining > limit:
            cap = max(1, (limit - below) // remaining)
            break
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.flatnonzero(counts):
        members = np.flatnonzero(labels == c)
        rows.append(members if len(members) <= cap else
                    np.sort(rng.choice(members, cap, replace=False)))
    rows = np.concatenate(rows)
    kept = np.bincount(labels[rows], minlength=len(counts))
    return rows, counts[labels[rows]] / kept[labels[rows]]


def fit_vector_scaling(log_probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                       ridge: float = VECTOR_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Vector scaling (Guo et al., 2017): per class a scale w_k and a bias b_k, so that
    softmax(w * z + b) has the least validation NLL. z are log-probabilities (a run's
    stored validation probabilities; softmax of them is the model's), so w = 1/T,
    b = 0 is temperature scaling, where the fit starts. A small ridge toward it keeps a
    class with few validation images from running off (b to minus infinity for a
    class never seen). Above VECTOR_FIT_IMAGES images the fit runs on a stratified
    sample weighted back to the class counts (``stratified_sample``).

    The objective is convex in (w, b) (a log-sum-exp of functions linear in them) and
    the ridge makes it strictly so: Newton's method with a backtracking line search
    finds its one minimum in a few steps, each a pass over the sample for the gradient
    and one matrix product for the 2K x 2K Hessian."""
    labels = np.asarray(labels).astype(np.int64)
    rows, weight = stratified_sample(labels, VECTOR_FIT_IMAGES)
    z = np.asarray(log_probs, dtype=np.float64)[rows]
    labels = labels[rows]
    n, k = len(labels), z.shape[1]
    weight = weight / weight.sum()  # over the full set's image count
    per_class = np.bincount(labels, weights=weight, minlength=k)
    picked = z[np.arange(n), labels]
    picked_sum = np.bincount(labels, weights=weight * picked, minlength=k)
    w0 = np.full(k, 1.0 / temperature)
    rows_n = np.arange(n)

    def softmax(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(the objective, the softmax of every sampled row) at ``theta``."""
        w, b = theta[:k], theta[k:]
        a = z * w
        a += b
        a -= a.max(axis=1, keepdims=True)
        picked_a = a[rows_n, labels]
        np.exp(a, out=a)  # one exp, in place: the softmax's numerators
        row_total = a.sum(axis=1)
        a /= row_total[:, None]
        nll = -(weight * (picked_a - np.log(row_total))).sum()
        return nll + 0.5 * ridge * (((w - w0) ** 2).sum() + (b**2).sum()), a

    theta = np.concatenate([w0, np.zeros(k)])
    value, p = softmax(theta)
    root = np.sqrt(weight)[:, None]
    both = np.empty((n, 2 * k), dtype=np.float32)
    diagonal = np.arange(k)
    for _ in range(_VECTOR_STEPS):
        pz = p * z
        p_sum, pz_sum = weight @ p, weight @ pz  # weighted sums over the images
        gradient = np.concatenate([pz_sum - picked_sum + ridge * (theta[:k] - w0),
                                   p_sum - per_class + ridge * theta[k:]])
        # the Hessian: each row's softmax covariance, in (w, b) through z and 1; its
        # product in float32 (twice as fast), which moves where a step lands a little
        # but not where the steps stop: that is where the float64 gradient is zero
        np.multiply(pz, root, out=both[:, :k])
        np.multiply(p, root, out=both[:, k:])
        hessian = -(both.T @ both).astype(np.float64)
        pz *= z
        hessian[diagonal, diagonal] += weight @ pz + ridge
        hessian[diagonal + k, diagonal + k] += p_sum + ridge
        hessian[diagonal, diagonal + k] += pz_sum
        hessian[diagonal + k, diagonal] += pz_sum
        step = -np.linalg.solve(hessian, gradient)
        decrease = -(gradient @ step)  # the Newton decrement squared
        if not decrease > _VECTOR_TOLERANCE:
            break
        size = 1.0
        while size > 1e-8:  # backtracking (Armijo): a convex objective takes a full step soon
            trial_value, trial_p = softmax(theta + size * step)
            if trial_value <= value - 0.25 * size * decrease:
                break
            size *= 0.5
        else:
            break  # no step along it lowers the objective: at its minimum to rounding
        theta, value, p = theta + size * step, trial_value, trial_p
        if size == 1.0 and decrease <= _VECTOR_ACCEPT:
            break  # the next decrement would be about 25 decrease^2: nothing left to gain
    return theta[:k].copy(), theta[k:].copy()


def apply_vector_scaling(log_probs: np.ndarray, scale: np.ndarray,
                         bias: np.ndarray) -> np.ndarray:
    def scaled(z: np.ndarray) -> np.ndarray:
        a = np.multiply(z, scale, dtype=np.float64)
        a += bias
        return _softmax(a)

    return by_row_blocks(scaled, log_probs)


_TOP_BITS = 1 << 16  # buckets of _quantiles: a float64's sign, exponent, 4 bits more
_COLUMN_BLOCK = 16  # classes copied to rows at a time (17 MB at 135,000 images)


def edges_and_counts_below(column: np.ndarray, quantiles: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(``np.quantile(column, quantiles)``, how many values lie below each)."""
    edges, below = _quantiles(column, quantiles)
    if below is None:  # a pass over the column an edge
        below = np.array([np.count_nonzero(column < e) for e in edges], dtype=np.int64)
    return edges, below


def _quantiles(column: np.ndarray, quantiles: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """``np.quantile(column, quantiles)`` (its default, linear interpolation between the
    two order statistics around (n - 1) q), bit for bit, for a contiguous float64
    column: 4x faster (0.9 against 3.8 ms at 135,000 values), as it sorts only the
    values near the quantiles. The values are bucketed by their top 16 bits (in that
    order for values >= 0: sign, exponent, the mantissa's first 4 bits), one bincount;
    the counts' running sum says which bucket holds each order statistic, and only those
    buckets' values are sorted. Anything else (negative, infinite, NaN) goes to
    ``np.quantile``. Beside the quantiles, how many values lie below each, from the same
    buckets (None where they did not serve)."""
    n = len(column)
    if n == 0 or sys.byteorder != "little" or column.dtype != np.float64:
        return np.quantile(column, quantiles), None
    keys = column.view(np.uint16)[3::4]  # each value's top 16 bits
    counts = np.bincount(keys, minlength=_TOP_BITS)
    if counts[0x7FF0:].any():  # the keys of inf, NaN and every negative value
        return np.quantile(column, quantiles), None
    below = np.cumsum(counts) - counts  # values in the buckets below each bucket
    virtual = (n - 1) * np.asarray(quantiles, dtype=np.float64)
    lower = np.floor(virtual)
    gamma = virtual - lower
    ranks = np.concatenate([lower, np.minimum(lower + 1, n - 1)]).astype(np.int64)
    bucket = np.searchsorted(below + counts, ranks, side="right")
    needed = np.unique(bucket)
    wanted = np.zeros(_TOP_BITS, dtype=bool)
    wanted[needed] = True
    near = np.sort(column[wanted[keys]])  # every value of the needed buckets, in order
    at = np.searchsorted(needed, bucket)
    offset = np.cumsum(counts[needed]) - counts[needed]  # in ``near``, where a bucket starts
    order_statistic = near[offset[at] + ranks - below[bucket]]
    a, b = order_statistic[:len(virtual)], order_statistic[len(virtual):]
    # numpy's interpolation, as it computes it (from the nearer end)
    step = b - a
    edges = np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)
    # below an edge: every value of the buckets below its own and those of its own
    # bucket before it (in ``near``); a bucket that holds no order statistic holds no
    # value between the two an edge lies between, so an edge in one has none of its own
    edge_keys = np.ascontiguousarray(edges).view(np.uint16)[3::4]
    if (edge_keys >= 0x7FF0).any():  # -0.0 would be one
        return edges, None
    slot = np.minimum(np.searchsorted(needed, edge_keys), len(needed) - 1)
    own = needed[slot] == edge_keys
    in_bucket = np.searchsorted(near, edges, side="left") - offset[slot]
    return edges, below[edge_keys] + np.where(own, in_bucket, 0)


def fit_histogram_binning(probs: np.ndarray, labels: np.ndarray,
                          n_bins: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Histogram binning (Zadrozny & Elkan, 2001), one class against the rest: each
    class's probabilities cut into ``n_bins`` bins of equal count, each bin replaced
    by the share of its images that are of the class, shrunk toward the class's
    frequency by one image's weight (so an empty or tiny bin is not 0 or 1). Returns
    (inner edges K x (n_bins - 1), bin values K x n_bins)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n, k = probs.shape
    per_class = np.bincount(labels, minlength=k)
    prior = per_class / n
    by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(per_class)[:-1])
    quantiles = np.arange(1, n_bins) / n_bins
    edges = np.empty((k, n_bins - 1))
    values = np.empty((k, n_bins))
    for first in range(0, k, _COLUMN_BLOCK):
        block = np.ascontiguousarray(probs[:, first:first + _COLUMN_BLOCK].T)  # a class a row
        for c, column in enumerate(block, start=first):
            edges[c], below = edges_and_counts_below(column, quantiles)
            # an image falls in bin j when j edges are at or below it (searchsorted's
            # "right"): the images in bins j and above are those not below edge j - 1
            at_or_above = n - below
            count = -np.diff(np.concatenate([[n], at_or_above, [0]]))
            positive = np.bincount(np.searchsorted(edges[c], column[by_class[c]],
                                                   side="right"), minlength=n_bins)
            values[c] = (positive + prior[c]) / (count + 1.0)
    return edges, values


def apply_histogram_binning(probs: np.ndarray, edges: np.ndarray,
                            values: np.ndarray) -> np.ndarray:
    """Each class's binned value for each image, the rows renormalised to sum to 1."""
    probs = np.asarray(probs, dtype=np.float64)
    out = np.empty_like(probs)
    for c in range(probs.shape[1]):
        out[:, c] = values[c][np.searchsorted(edges[c], probs[:, c], side="right")]
    return out / out.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Recalibration:
    """The recalibrators fitted on a run's validation split at an epoch's end."""

    temperature: float
    vector_scale: np.ndarray | None = None  # (K,)
    vector_bias: np.ndarray | None = None  # (K,)
    histogram_edges: np.ndarray | None = None  # (K, bins - 1)
    histogram_values: np.ndarray | None = None  # (K, bins)

    @property
    def methods(self) -> tuple[str, ...]:
        """The recalibrators this one holds (an older checkpoint: only temperature)."""
        return tuple(m for m, ok in (("temperature", True),
                                     ("vector", self.vector_scale is not None),
                                     ("histogram", self.histogram_values is not None)) if ok)

    def apply(self, method: str, log_probs: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities from (raw) log-probabilities."""
        if method not in self.methods:
            raise ValueError(f"no {method} recalibration here (it holds "
                             f"{', '.join(self.methods)})")
        if method == "temperature":
            return apply_temperature(log_probs, self.temperature)
        if method == "vector":
            return apply_vector_scaling(log_probs, self.vector_scale, self.vector_bias)
        return by_row_blocks(lambda z: apply_histogram_binning(
            np.exp(np.asarray(z, dtype=np.float64)), self.histogram_edges,
            self.histogram_values), log_probs)

    def apply_to_logits(self, method: str, logits: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities from the model's logits, as prediction computes
        them: the log of the raw probabilities (clipped where they underflow) recalibrated,
        a block of rows at a time; the temperature straight from the logits."""
        if method == "temperature":
            return apply_temperature(logits, self.temperature)
        return by_row_blocks(lambda z: self.apply(method, np.log(np.clip(
            apply_temperature(z, 1.0), 1e-300, 1.0))), logits)

    def check(self, classes: int) -> None:
        """ValueError unless every array fits ``classes`` classes."""
        for name in ("vector_scale", "vector_bias", "histogram_edges", "histogram_values"):
            value = getattr(self, name)
            if value is not None and (value.shape[0] != classes
                                      or not np.all(np.isfinite(value))):
                raise ValueError(f"its {name.replace('_', ' ')} does not fit {classes} "
                                 "classes")
        if self.histogram_values is not None and (
                self.histogram_edges is None
                or self.histogram_edges.shape[1] != self.histogram_values.shape[1] - 1):
            raise ValueError("its histogram bins and edges disagree")

    def to_arrays(self) -> dict:
        """The fitted arrays (the temperature is stored on its own)."""
        names = ("vector_scale", "vector_bias", "histogram_edges", "histogram_values")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @classmethod
    def from_arrays(cls, temperature: float, arrays: dict) -> Recalibration:
        return cls(float(temperature), **{k: np.asarray(v, dtype=np.float64)
                                          for k, v in arrays.items()})
