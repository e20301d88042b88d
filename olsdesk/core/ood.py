"""Unfamiliar inputs: a score that is high for images like the training data and low for
images unlike it (another modality, a digit, a dose grid), and the threshold below which
a prediction is marked "unlike the training data".

Two scores, both fitted at every epoch end on what validation already computes
(definitions in docs/ALGORITHMS.md):

- ``mahalanobis`` (Lee et al. 2018): minus the smallest squared Mahalanobis distance of
  the penultimate features to a class mean, under one covariance shared by the classes
  (Ledoit-Wolf shrinkage, so 2,048 features from 2,000 images still give an invertible
  matrix). It sees what the features hold, not only what the classifier concluded.
- ``energy`` (Liu et al. 2020): the log-sum-exp of the logits, which a confident softmax
  can share with an unfamiliar image.

The threshold keeps ``KEEP`` (95 %) of validation images: it is the 5 % quantile of their
scores, each score from a fit that did not see the image (five folds), so the share
kept is not flattered by the fit having seen the images it is measured on.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from olsdesk.core.metrics import class_means

METHODS = ("mahalanobis", "energy")
DEFAULT_METHOD = "mahalanobis"  # by measurement: docs/PERFORMANCE.md, unfamiliar inputs
KEEP = 0.95  # the share of validation images the threshold calls familiar
MIN_SPREAD = 10  # images beyond one a class, for a covariance about the class means


def energy_score(logits: np.ndarray) -> np.ndarray:
    """log sum_k exp(logit_k) per image (high: familiar)."""
    from scipy.special import logsumexp

    return logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def ledoit_wolf_shrinkage(centred: np.ndarray, gram: np.ndarray | None = None
                          ) -> tuple[float, float]:
    """(shrinkage, mu) of Ledoit & Wolf (2004) for rows ``centred`` (n x D): the
    covariance estimate is (1 - shrinkage) S + shrinkage mu I with S = X'X / n and mu its
    mean eigenvalue. ``gram``: X X' or X' X, whichever is smaller (one is computed when
    not given); their Frobenius norms are the same, so no D x D matrix is needed."""
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    if gram is None:
        gram = x @ x.T if n <= d else x.T @ x
    return _shrinkage((x ** 2).sum(axis=1), gram, d)


def _shrinkage(row_sq: np.ndarray, gram: np.ndarray, d: int) -> tuple[float, float]:
    """``ledoit_wolf_shrinkage`` from each row's squared norm and X X' or X' X."""
    n = len(row_sq)
    mu = row_sq.sum() / (n * d)  # trace(S) / D
    delta_ = (gram ** 2).sum() / n**2  # ||S||_F^2
    beta_ = (row_sq ** 2).sum()  # sum over rows of ||x||^4
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * row_sq.sum() / n + d * mu**2) / d
    beta = min(beta, delta)
    return (0.0 if beta <= 0 else float(beta / delta)), float(mu)


@dataclass(frozen=True)
class FeatureDensity:
    """Class means and the precision (inverse) of the shrunk covariance shared by the
    classes, as ``isotropic`` I + directions diag(weights) directions' (D x r directions):
    fewer images than features give r = n directions (the precision's part beyond the
    isotropic), more give a D x D Cholesky factor. Either is the exact inverse."""

    means: np.ndarray = field(repr=False)  # K x D (NaN rows: a class with no image)
    directions: np.ndarray = field(repr=False)  # D x r
    weights: np.ndarray = field(repr=False)  # r
    isotropic: float = 0.0

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus the smallest squared Mahalanobis distance to a class mean (high: familiar)."""
        f = np.asarray(features, dtype=np.float64)
        means, means_in = self._means
        return _score(f @ np.asarray(self.directions, dtype=np.float64), means_in,
                      self.weights, self.isotropic, lambda: _squared(f, means))

    @functools.cached_property
    def _means(self) -> tuple[np.ndarray, np.ndarray]:
        """(the means of the classes with images, their coordinates along the directions):
        the same for every batch scored (its product was 15 of a 64-image batch's 24 ms at
        165 classes x 2,048 features x 2,000 directions)."""
        means = np.asarray(self.means, dtype=np.float64)
        means = means[np.isfinite(means).all(axis=1)]
        return means, means @ np.asarray(self.directions, dtype=np.float64)

    def to_arrays(self) -> dict:
        return {"means": self.means.astype(np.float32),
                "directions": self.directions.astype(np.float32),
                "weights": self.weights.astype(np.float64), "isotropic": float(self.isotropic)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> FeatureDensity:
        if "basis" in arrays:  # olsdesk 0.3: orthonormal directions, their variances, and
            # one variance ("rest") for every other direction
            variances, rest = np.asarray(arrays["variances"], dtype=np.float64), \
                float(arrays["rest"])
            if not (variances > 0).all() or not rest > 0:
                raise ValueError("the feature density's variances must be positive")
            arrays = {"means": arrays["means"], "directions": arrays["basis"],
                      "weights": 1 / variances - 1 / rest, "isotropic": 1 / rest}
        # float64 once here, not at every score (a checkpoint stores float32: each batch
        # scored converted 2,048 x 2,000 directions, 33 MB, again)
        means = np.asarray(arrays["means"], dtype=np.float64)
        directions = np.asarray(arrays["directions"], dtype=np.float64)
        weights = np.asarray(arrays["weights"], dtype=np.float64)
        isotropic = float(arrays["isotropic"])
        if means.ndim != 2 or directions.shape != (means.shape[1], len(weights)):
            raise ValueError("the feature density's means and directions do not fit together")
        if not (np.isfinite(weights).all() and math.isfinite(isotropic) and isotropic >= 0):
            raise ValueError("the feature density's weights must be finite numbers")
        return cls(means, directions, weights, isotropic)


def _squared(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """sum_j w_j (x_j - y_j)^2 of every row pair, N x K: no N x K x D array."""
    if w is None:
        return (x ** 2).sum(1)[:, None] - 2 * x @ y.T + (y ** 2).sum(1)[None, :]
    return ((x ** 2) @ w)[:, None] - 2 * (x * w) @ y.T + ((y ** 2) @ w)[None, :]


def _score(f_in: np.ndarray, m_in: np.ndarray, weights: np.ndarray, isotropic: float,
           apart: Callable[[], np.ndarray]) -> np.ndarray:
    """Minus the smallest of (f - mu)' P (f - mu) over the class means mu, with
    P = isotropic I + V diag(weights) V', from the coordinates ``f_in`` and ``m_in`` of the
    images and the means along V and ``apart()``, their squared distances (N x K)."""
    distance = _squared(f_in, m_in, np.asarray(weights, dtype=np.float64))
    if isotropic:
        distance += isotropic * apart()
    return -np.maximum(distance, 0.0).min(axis=1)


def _solve_lower(lower: np.ndarray, b: np.ndarray, block: int = 256,
                 overwrite: bool = False) -> np.ndarray:
    """L^-1 b for a lower triangular L, a block of rows at a time: numpy's products,
    which let go of the GIL, do nearly all the work, and scipy's triangular solve, which
    holds it (0.2 s at 2,000 x 2,048, a frozen window), only a block's (a few ms). For a
    b of more columns than a block has rows, scipy inverts the block and a product
    applies it (35 % faster than scipy's solve of the block's rows of b). ``overwrite``:
    b (float64) becomes the solution, no copy made."""
    from scipy.linalg import solve_triangular

    x = b if overwrite and b.dtype == np.float64 else np.array(b, dtype=np.float64)
    for start in range(0, len(x), block):
        end = min(start + block, len(x))
        if start:
            x[start:end] -= lower[start:end, :start] @ x[:start]
        diagonal = lower[start:end, start:end]
        if x.shape[1] > end - start:  # many columns: the block's inverse, then a product
            inverse = solve_triangular(diagonal, np.eye(end - start), lower=True,
                                       check_finite=False)
            x[start:end] = inverse @ x[start:end]
        else:
            x[start:end] = solve_triangular(diagonal, x[start:end], lower=True,
                                            check_finite=False)
    return x


def _ridge(shrinkage: float, mu: float, n: int) -> tuple[float, float]:
    """(a, b) of the Ledoit-Wolf covariance a I + b X'X, b = (1 - shrinkage) / n."""
    # constant features: a variance, not a division by 0
    return max(shrinkage * mu, max(mu, 1e-12) * 1e-6), (1 - shrinkage) / n


def _sample_gram(features: np.ndarray) -> np.ndarray:
    """F F' of the features about their overall mean (n x n)."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    return f @ f.T


class SampleGram:
    """The sample's ``_sample_gram``, computed once, by the first fit that asks for it:
    every fit on fewer images than features works from it (its Gram matrix about its own
    class means, and the products that score held-out images), so the full fit and five
    folds cost one product of the features, not six; the epoch end's PCA and separation
    use it too."""

    def __init__(self, features: np.ndarray):
        self._features, self._lock, self._value = features, threading.Lock(), None
        self.wide = len(features) <= features.shape[1]  # fewer images than features

    def __call__(self) -> np.ndarray:
        with self._lock:
            if self._value is None:
                self._value = _sample_gram(self._features)
            return self._value


@dataclass(frozen=True)
class _FromGram:
    """A fit on the images ``rows`` of a sample, from the sample's Gram matrix g = F F'
    (F about the sample's mean): m_k the class means of those images, X their features
    about them, P = (I - X' (L L')^-1 X) / a with L L' = a/b I + X X'."""

    lower: np.ndarray | None  # L (None when b = 0: P = I / a)
    a: float
    fm: np.ndarray  # n x K': f_i . m_k for every image of the sample, present classes only
    mm: np.ndarray  # K' x K': m_k . m_l
    own: np.ndarray  # each row's class among the present ones

    @classmethod
    def fit(cls, g: np.ndarray, labels: np.ndarray, num_classes: int, rows: np.ndarray,
            d: int) -> _FromGram:
        r = np.flatnonzero(rows)
        y = labels[r]
        counts = np.bincount(y, minlength=num_classes)
        present = counts > 0
        own = np.cumsum(present)[y] - 1
        counts = counts[present]
        # sums over each class's images: of g's rows (g is symmetric: f_i . m_k for every
        # image i of the sample), then of those, contiguous rows at a time (a product with
        # a one-hot matrix took 35 ms of a fold's 120)
        grouped = r[np.argsort(own, kind="stable")]
        starts = np.cumsum(counts) - counts
        fm = np.ascontiguousarray((np.add.reduceat(g[grouped], starts, axis=0)
                                   / counts[:, None]).T)
        mm = np.add.reduceat(fm[grouped], starts, axis=0) / counts[:, None]
        # X X' = g - f_i . m_(y_j) - f_j . m_(y_i) + m_(y_i) . m_(y_j) = g - v - v',
        # v_ij = f_i . m_(y_j) - m_(y_i) . m_(y_j) / 2: no gather of a K x K matrix to n x n
        v = np.take(fm[r] - 0.5 * mm[own], own, axis=1)
        gram = g - v if len(r) == len(g) else np.take(np.take(g, r, axis=0), r, axis=1) - v
        gram -= v.T
        a, b = _ridge(*_shrinkage(np.diag(gram).copy(), gram, d), len(y))
        if b <= 0:
            return cls(None, a, fm, mm, own)
        gram[np.diag_indices(len(y))] += a / b
        return cls(np.linalg.cholesky(gram), a, fm, mm, own)

    def project(self, xb: np.ndarray) -> np.ndarray:
        """The coordinates L^-1 X b' of points b, from X b' (rows x N)."""
        if self.lower is None:
            return np.zeros((xb.shape[1], 0))
        return _solve_lower(self.lower, xb).T

    def held_out_score(self, g: np.ndarray, rows: np.ndarray, held: np.ndarray) -> np.ndarray:
        """The scores of the sample's ``held`` images."""
        fm_held = self.fm[held]
        x_held = g[np.ix_(rows, held)] - fm_held[:, self.own].T  # X f'
        x_means = self.fm[rows] - self.mm[self.own]  # X m'
        n = 0 if self.lower is None else len(self.lower)

        def apart() -> np.ndarray:  # |f - m_k|^2
            return (np.diag(g)[held][:, None] - 2 * fm_held + np.diag(self.mm)[None, :])

        # one solve for both (more columns than a block's rows: the blocks' inverses)
        both = self.project(np.hstack([x_held, x_means]))
        held_count = x_held.shape[1]
        return _score(both[:held_count], both[held_count:], np.full(n, -1 / self.a),
                      1 / self.a, apart)


def _covariance_factor(f: np.ndarray, labels: np.ndarray, num_classes: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(class means, the lower Cholesky factor of the Ledoit-Wolf covariance), for more
    images than features: the distance is |L^-1 (f - m_k)|^2."""
    n, d = f.shape
    means = class_means(f, labels, num_classes)
    centred = f - means[labels]
    gram = centred.T @ centred
    a, b = _ridge(*_shrinkage((centred ** 2).sum(axis=1), gram, d), n)
    gram *= b
    gram[np.diag_indices(d)] += a
    return means, np.linalg.cholesky(gram)


def fit_density(features: np.ndarray, labels: np.ndarray, num_classes: int,
                gram: np.ndarray | None = None) -> FeatureDensity:
    """Class means and the Ledoit-Wolf shrunk covariance of the features about them.
    ``gram``: the features' ``_sample_gram``, where it is at hand."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, d = f.shape
    if n > d:  # the inverse is L^-T L^-1
        means, lower = _covariance_factor(f, labels, num_classes)
        return FeatureDensity(means, _solve_lower(lower, np.eye(d)).T, np.ones(d), 0.0)
    fit = _FromGram.fit(_sample_gram(f) if gram is None else gram, labels, num_classes,
                        np.ones(n, dtype=bool), d)
    means = class_means(f, labels, num_classes)
    if fit.lower is None:
        return FeatureDensity(means, np.zeros((d, 0)), np.zeros(0), 1 / fit.a)
    # Woodbury: the inverse is (I - W'W) / a with W = L^-1 X (n x D)
    centred = np.array(f)  # X, solved in place (four 33 MB copies were two)
    centred -= means[labels]
    w = _solve_lower(fit.lower, centred, overwrite=True)
    return FeatureDensity(means, w.T, np.full(n, -1 / fit.a), 1 / fit.a)


def _held_out_score(features: np.ndarray, labels: np.ndarray, num_classes: int,
                    held: np.ndarray, gram: Callable[[], np.ndarray] | None = None
                    ) -> np.ndarray:
    """The scores of the ``held`` images under the density of the others, without its
    D x r directions: from the sample's Gram matrix (``gram()``, computed here when not
    given) for fewer images than features, else from the others' covariance factor."""
    labels = np.asarray(labels, dtype=np.int64)
    rows = ~held
    d = features.shape[1]
    if rows.sum() <= d:
        g = _sample_gram(features) if gram is None else gram()
        return _FromGram.fit(g, labels, num_classes, rows, d).held_out_score(g, rows, held)
    means, lower = _covariance_factor(np.asarray(features[rows], dtype=np.float64),
                                      labels[rows], num_classes)
    means = means[np.isfinite(means).all(axis=1)]
    f = np.asarray(features[held], dtype=np.float64)
    return _score(_solve_lower(lower, f.T).T, _solve_lower(lower, means.T).T, np.ones(d),
                  0.0, lambda: _squared(f, means))


@dataclass(frozen=True)
class Familiarity:
    """A fitted unfamiliar-input detector: the score and its threshold."""

    method: str
    threshold: float  # a score below it is "unlike the training data"
    density: FeatureDensity | None = None  # for mahalanobis
    keep: float = KEEP

    def score(self, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        if self.method == "energy":
            return energy_score(logits)
        return self.density.score(features)

    def unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) < self.threshold

    def to_arrays(self) -> dict:
        out = {"method": self.method, "threshold": float(self.threshold),
               "keep": float(self.keep)}
        if self.density is not None:
            out.update({f"density_{k}": v for k, v in self.density.to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> Familiarity:
        method = str(arrays["method"])
        if method not in METHODS:
            raise ValueError(f"unknown unfamiliar-input score {method!r}")
        density = None
        if method == "mahalanobis":
            density = FeatureDensity.from_arrays(
                {k[len("density_"):]: v for k, v in arrays.items() if k.startswith("density_")})
        threshold = float(arrays["threshold"])
        if math.isnan(threshold):
            raise ValueError("the unfamiliar-input threshold is not a number")
        return cls(method, threshold, density, float(arrays["keep"]))


def _threshold(scores: np.ndarray, keep: float) -> float:
    """The score above which ``keep`` of these images lie."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - keep))


def familiarity_parts(energy: np.ndarray, features: np.ndarray | None, labels: np.ndarray,
                      num_classes: int, method: str = DEFAULT_METHOD, keep: float = KEEP,
                      seed: int = 0, folds: int = 5, gram: SampleGram | None = None
                      ) -> tuple[list[Callable[[], object]], Callable[[list], Familiarity]]:
    """``fit_familiarity``'s work as independent parts, and what makes the detector of
    their results (in the parts' order): for Mahalanobis, the density fitted on every
    image, then one fitted on each fold's complement that scores the fold. Each part is
    a Cholesky factor and triangular solves (on one core at 2,048 features and 2,000
    images: the full fit 0.38 s and the sample's Gram matrix 0.17, a fold 0.14 s), so
    the epoch end runs them side by side with its other fits. ``gram``: the features' ``SampleGram``,
    where the caller shares it."""
    if method not in METHODS:
        raise ValueError(f"unknown unfamiliar-input score {method!r}; one of "
                         f"{', '.join(METHODS)}")
    spread = 0 if features is None else len(features) - len(np.unique(labels))
    if method != "mahalanobis" or spread < MIN_SPREAD:
        return [], lambda _: Familiarity("energy", _threshold(energy, keep), None, keep)
    n = len(labels)
    fold = np.random.default_rng(seed).permutation(n) % folds
    gram = SampleGram(features) if gram is None else gram

    def held_out(k: int) -> tuple[np.ndarray, np.ndarray]:
        held = fold == k
        return held, _held_out_score(features, labels, num_classes, held, gram)

    def finish(results: list) -> Familiarity:
        scores = np.empty(n)  # each image's score from a density that did not see it
        for held, score in results[1:]:
            scores[held] = score
        return Familiarity(method, _threshold(scores, keep), results[0], keep)

    def full() -> FeatureDensity:
        return fit_density(features, labels, num_classes, gram() if gram.wide else None)

    return [full, *(functools.partial(held_out, k) for k in range(folds))], finish


def fit_familiarity(energy: np.ndarray, features: np.ndarray | None, labels: np.ndarray,
                    num_classes: int, method: str = DEFAULT_METHOD, keep: float = KEEP,
                    seed: int = 0) -> Familiarity:
    """The detector from validation images: their ``energy`` scores (N), and
    ``features`` and ``labels`` of some of them (n x D) for Mahalanobis, whose threshold
    comes from five-fold held-out scores. Mahalanobis needs images to spread about their
    class means: with fewer than ``MIN_SPREAD`` more images than classes among them (a
    tiny validation split, one image a class) it falls back to the energy score."""
    parts, finish = familiarity_parts(energy, features, labels, num_classes, method, keep,
                                      seed)
    return finish([part() for part in parts])


def detection_metrics(familiar: np.ndarray, unfamiliar: np.ndarray) -> dict:
    """How well the score tells the two apart, familiar images being the positives:
    AUROC (ties count half) and the share of unfamiliar images still called familiar at
    the threshold that keeps 95 % of the familiar ones (FPR at 95 % TPR)."""
    from scipy.stats import rankdata

    a = np.asarray(familiar, dtype=np.float64)
    b = np.asarray(unfamiliar, dtype=np.float64)
    ranks = rankdata(np.concatenate([a, b]))  # ties share their mean rank (Mann-Whitney)
    auroc = (ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b))
    cut = _threshold(a, 0.95)
    return {"auroc": float(auroc), "fpr_at_95_tpr": float((b >= cut).mean()),
            "familiar_images": len(a), "unfamiliar_images": len(b)}
