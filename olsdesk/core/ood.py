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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

METHODS = ("mahalanobis", "energy")
DEFAULT_METHOD = "mahalanobis"  # by measurement: docs/PERFORMANCE.md, unfamiliar inputs
KEEP = 0.95  # the share of validation images the threshold calls familiar
RANK = 1024  # feature directions kept exactly (the rest share one variance; bench/ood.py)
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
    row_sq = (x ** 2).sum(axis=1)
    mu = row_sq.sum() / (n * d)  # trace(S) / D
    delta_ = (gram ** 2).sum() / n**2  # ||S||_F^2
    beta_ = (row_sq ** 2).sum()  # sum over rows of ||x||^4
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * row_sq.sum() / n + d * mu**2) / d
    beta = min(beta, delta)
    return (0.0 if beta <= 0 else float(beta / delta)), float(mu)


def _top_eigen(x: np.ndarray, gram: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(the largest ``rank`` eigenvalues of S = X'X / n, their eigenvectors D x r), from
    the smaller Gram matrix; directions of no variance are left out."""
    n, d = x.shape
    m = len(gram)
    r = min(rank, m)
    # all of them (LAPACK's divide and conquer: faster than a subset's driver), in numpy,
    # which lets go of the GIL while it works: scipy.linalg.eigh held it, freezing the
    # window for 112 ms at 165 classes while the training thread fitted this
    values, vectors = np.linalg.eigh(gram)
    values, vectors = values[::-1][:r], vectors[:, ::-1][:, :r]
    keep = values > max(values[0], 0.0) * 1e-10
    values, vectors = values[keep], vectors[:, keep]
    if n <= d:  # gram = X X': the eigenvectors of X'X are X' u / sigma
        vectors = x.T @ vectors / np.sqrt(values)
    return values / n, vectors


@dataclass(frozen=True)
class FeatureDensity:
    """Class means and a shrunk shared covariance of the penultimate features, kept as
    its top ``RANK`` eigenvectors with their (shrunk) variances and one variance for the
    directions left (exact when the features span no more than RANK directions)."""

    means: np.ndarray = field(repr=False)  # K x D (NaN rows: a class with no image)
    basis: np.ndarray = field(repr=False)  # D x r, orthonormal columns
    variances: np.ndarray = field(repr=False)  # r
    rest: float = 1.0  # the variance of every direction outside the basis

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus the smallest squared Mahalanobis distance to a class mean (high: familiar)."""
        f = np.asarray(features, dtype=np.float64)
        means = np.asarray(self.means, dtype=np.float64)
        present = np.isfinite(means).all(axis=1)
        means = means[present]
        basis = np.asarray(self.basis, dtype=np.float64)

        def squared(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # N x K, no N x K x D
            return (x ** 2).sum(1)[:, None] - 2 * x @ y.T + (y ** 2).sum(1)[None, :]

        f_in, m_in = f @ basis, means @ basis  # coordinates in the kept directions
        scale = 1 / np.sqrt(self.variances)
        outside = np.maximum(squared(f, means) - squared(f_in, m_in), 0.0)
        distance = np.maximum(squared(f_in * scale, m_in * scale), 0.0) + outside / self.rest
        return -distance.min(axis=1)

    def to_arrays(self) -> dict:
        return {"means": self.means.astype(np.float32), "basis": self.basis.astype(np.float32),
                "variances": self.variances.astype(np.float64), "rest": float(self.rest)}

    @classmethod
    def from_arrays(cls, arrays: dict) -> FeatureDensity:
        means, basis = np.asarray(arrays["means"]), np.asarray(arrays["basis"])
        variances = np.asarray(arrays["variances"], dtype=np.float64)
        if means.ndim != 2 or basis.shape != (means.shape[1], len(variances)):
            raise ValueError("the feature density's means and basis do not fit together")
        if not (variances > 0).all() or not float(arrays["rest"]) > 0:
            raise ValueError("the feature density's variances must be positive")
        return cls(means, basis, variances, float(arrays["rest"]))


def fit_density(features: np.ndarray, labels: np.ndarray, num_classes: int,
                rank: int | None = None) -> FeatureDensity:
    """Class means and the Ledoit-Wolf shrunk covariance of the features about them."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, d = f.shape
    members = np.eye(num_classes)[labels]  # n x K, one-hot
    with np.errstate(invalid="ignore", divide="ignore"):  # a class without images: NaN
        means = (members.T @ f) / members.sum(axis=0)[:, None]
    centred = f - means[labels]
    gram = centred @ centred.T if n <= d else centred.T @ centred
    shrinkage, mu = ledoit_wolf_shrinkage(centred, gram)
    eig, basis = _top_eigen(centred, gram, RANK if rank is None else rank)
    left = d - len(eig)
    rest_eig = max(mu * d - eig.sum(), 0.0) / left if left else 0.0
    floor = max(mu, 1e-12) * 1e-6  # constant features: a variance, not a division by 0
    variances = np.maximum((1 - shrinkage) * eig + shrinkage * mu, floor)
    rest = max((1 - shrinkage) * rest_eig + shrinkage * mu, floor)
    return FeatureDensity(means, basis, variances, float(rest))


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
                      seed: int = 0, folds: int = 5
                      ) -> tuple[list[Callable[[], object]], Callable[[list], Familiarity]]:
    """``fit_familiarity``'s work as independent parts, and what makes the detector of
    their results (in the parts' order): for Mahalanobis, the density fitted on every
    image, then one fitted on each fold's complement that scores the fold. Each part is
    an eigendecomposition (0.6-1.2 s on one core at 2,048 features), so the epoch end
    runs them side by side with its other fits."""
    if method not in METHODS:
        raise ValueError(f"unknown unfamiliar-input score {method!r}; one of "
                         f"{', '.join(METHODS)}")
    spread = 0 if features is None else len(features) - len(np.unique(labels))
    if method != "mahalanobis" or spread < MIN_SPREAD:
        return [], lambda _: Familiarity("energy", _threshold(energy, keep), None, keep)
    n = len(labels)
    fold = np.random.default_rng(seed).permutation(n) % folds

    def held_out(k: int) -> tuple[np.ndarray, np.ndarray]:
        held = fold == k
        return held, fit_density(features[~held], labels[~held], num_classes).score(
            features[held])

    def finish(results: list) -> Familiarity:
        scores = np.empty(n)  # each image's score from a density that did not see it
        for held, score in results[1:]:
            scores[held] = score
        return Familiarity(method, _threshold(scores, keep), results[0], keep)

    parts = [functools.partial(held_out, k) for k in range(folds)]
    return [functools.partial(fit_density, features, labels, num_classes), *parts], finish


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
