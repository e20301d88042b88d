"""Split-conformal prediction sets: the classes that hold the true one with a chosen
probability (the coverage), calibrated on images no training step saw (validation).

Each image gets a nonconformity score for every class from its probabilities; the
calibration images' scores of their *true* class give a threshold, the
``ceil((n + 1) * coverage) / n`` quantile; a new image's set is every class scoring
within it. If calibration and new images are exchangeable, the set holds the true class
with probability at least ``coverage`` whatever the model (Vovk et al. 2005; Angelopoulos
& Bates 2021). Three scores (definitions in docs/ALGORITHMS.md):

- ``lac``: 1 - p(class). Smallest sets on average; a set can be empty (no class is
  likely enough) and its size says little about how hard the image is.
- ``aps``: the probability mass of the classes ranked above the class plus its own
  (Romano et al. 2020). Sets grow with the model's doubt; never empty.
- ``raps`` (the default): APS plus ``lam`` for every rank past ``k_reg`` (Angelopoulos
  et al. 2021), which keeps APS's long tails of unlikely classes out of the sets;
  ``lam`` and ``k_reg`` are chosen on a fifth of the calibration images, the threshold
  on the rest.

The APS and RAPS sets are deterministic: a class is in the set while the mass (and
penalty) ranked *above* it is under the threshold, so the class that crosses it is
included. That set contains the one of the score's definition, so it covers at least as
often (it over-covers a little) and the same image always gets the same set.

``class_conditional`` fits one threshold a class from that class's calibration images,
so each class is covered at the target, not only on average (165 imbalanced classes
otherwise leave rare classes under-covered). A class with too few calibration images for
its quantile (fewer than ``1 / (1 - coverage) - 1``) gets no threshold: it is in every set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from olsdesk.config import CONFORMAL_METHODS
from olsdesk.core.calibration import apply_temperature, by_row_blocks

METHODS = CONFORMAL_METHODS
# the default, by measurement (docs/PERFORMANCE.md): deterministic APS sets swell to tens
# of classes when a model spreads its doubt thinly over many (1.0 coverage, 43 classes of
# 165); LAC leaves sets empty; RAPS holds the target with 1-14 classes
DEFAULT_METHOD = "raps"
RAPS_LAMBDAS = (0.001, 0.01, 0.1, 0.2, 0.5)  # the penalty candidates, as in RAPS's paper
RAPS_TUNING_SHARE = 0.2  # of the calibration images, to choose lam and k_reg
RAPS_TUNING_COVERAGE = 0.9  # the coverage lam and k_reg are chosen for (stored once)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest of ``scores``; +inf when n is too small
    for the coverage asked (then only the set of every class is sure to cover)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = scores.size
    rank = math.ceil((n + 1) * coverage - 1e-9)
    return float(scores[rank - 1]) if 1 <= rank <= n else math.inf


def _ranked(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): classes by descending probability (ties: lower class first), and
    each class's 0-based rank in that order."""
    order = np.argsort(-probs, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(probs.shape[1])[None, :].repeat(len(probs), 0),
                      axis=1)
    return order, rank


def _mass_above(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mass of the classes ranked above each class, each class's 0-based rank)."""
    order, rank = _ranked(probs)
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    before_sorted = np.cumsum(sorted_probs, axis=1) - sorted_probs
    return np.take_along_axis(before_sorted, rank, axis=1), rank


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown conformal method {method!r}; one of {', '.join(METHODS)}")


def _penalty(rank: np.ndarray, method: str, lam: float, k_reg: int):
    """RAPS's penalty of a 0-based rank (0 for APS)."""
    return lam * np.maximum(0, rank + 1 - k_reg) if method == "raps" else 0.0


def _placement(probs: np.ndarray, method: str, lam: float = 0.0, k_reg: int = 0) -> np.ndarray:
    """N x K: what a set compares with the threshold for each class: its LAC score, or
    the mass (and penalty) ranked above it for APS and RAPS, so that the class crossing
    the threshold is kept."""
    probs = np.asarray(probs, dtype=np.float64)
    if method == "lac":
        return 1.0 - probs
    above, rank = _mass_above(probs)
    return above + _penalty(rank, method, lam, k_reg)


def true_class_scores(probs: np.ndarray, labels: np.ndarray, method: str, lam: float = 0.0,
                      k_reg: int = 0) -> np.ndarray:
    """Each image's score of its true class (what calibration takes the quantile of).
    No sort: the classes ranked above the true one are those more probable, or as
    probable with a lower number (one pass over N x K at RadImageNet's size)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    _check(method)
    if method == "lac":
        return 1.0 - probs[np.arange(len(labels)), labels]
    p_true, mass, rank = _true_class_mass(probs, labels)
    return mass + p_true + _penalty(rank, method, lam, k_reg)


def _true_class_mass(probs: np.ndarray, labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's (true class's probability, mass of the classes ranked above it, their
    count): what APS and RAPS scores are made of."""
    p_true = probs[np.arange(len(labels)), labels]
    above = probs > p_true[:, None]
    tied_before = probs == p_true[:, None]
    tied_before &= np.arange(probs.shape[1])[None, :] < labels[:, None]
    above |= tied_before  # in place: a third faster than one expression
    # a product with the mask, not np.where: the same addends (p or 0) in the same
    # order, so the same sums, 3x faster
    return p_true, (probs * above).sum(axis=1), np.count_nonzero(above, axis=1)


@dataclass(frozen=True)
class ConformalSets:
    """A fitted split-conformal predictor: a threshold (one a class if class-conditional)."""

    method: str
    coverage: float  # the target: the share of images whose set holds their class
    thresholds: np.ndarray = field(repr=False)  # K (class-conditional) or 1
    class_conditional: bool = False
    lam: float = 0.0  # RAPS's penalty a rank past k_reg
    k_reg: int = 0
    calibration_images: int = 0

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """N x K booleans: class k is in image i's set (a block of images at a time: a
        set ranks its image's classes, and the ranking's N x K temporaries of a whole
        test set were 1.5 GB at 200,000 x 165)."""
        limit = self.thresholds[None, :] if self.class_conditional else self.thresholds[0]

        def block(p: np.ndarray) -> np.ndarray:
            placed = _placement(p, self.method, self.lam, self.k_reg)
            if self.method == "lac":
                return placed <= limit
            return placed < limit  # APS/RAPS: the class that crosses the threshold is kept

        return by_row_blocks(block, probs)

    def to_dict(self) -> dict:
        return {"method": self.method, "coverage_target": self.coverage,
                "class_conditional": self.class_conditional,
                "thresholds": [None if not math.isfinite(t) else float(t)
                               for t in self.thresholds],
                "lambda": self.lam, "k_reg": self.k_reg,
                "calibration_images": self.calibration_images}


@dataclass(frozen=True)
class Calibration:
    """What split conformal needs from the calibration images, kept in each checkpoint
    (a few floats an image, not its probabilities): every image's true class and its
    score of that class under each method; RAPS's ``lam`` and ``k_reg``, and NaN for
    RAPS on the fifth of images that chose them. Any coverage, method or per-class
    choice is fitted from it at once."""

    labels: np.ndarray = field(repr=False)  # (N,) int
    scores: dict = field(repr=False)  # method -> (N,) float
    lam: float = 0.0
    k_reg: int = 0

    def fit(self, method: str = DEFAULT_METHOD, coverage: float = 0.9,
            class_conditional: bool = False, num_classes: int | None = None) -> ConformalSets:
        _check(method)
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage {coverage} must lie between 0 and 1")
        scores = np.asarray(self.scores[method], dtype=np.float64)
        used = np.isfinite(scores)
        scores, labels = scores[used], self.labels[used]
        if class_conditional:
            k = num_classes if num_classes is not None else int(self.labels.max()) + 1
            thresholds = np.array([conformal_quantile(scores[labels == c], coverage)
                                   for c in range(k)])
        else:
            thresholds = np.array([conformal_quantile(scores, coverage)])
        lam, k_reg = (self.lam, self.k_reg) if method == "raps" else (0.0, 0)
        return ConformalSets(method, float(coverage), thresholds, class_conditional, lam,
                             k_reg, int(used.sum()))

    def to_arrays(self) -> dict:
        """Plain arrays and numbers (a checkpoint stores them as tensors)."""
        return {"labels": self.labels.astype(np.int64), "lambda": float(self.lam),
                "k_reg": int(self.k_reg),
                **{f"scores_{m}": np.asarray(self.scores[m], dtype=np.float32)
                   for m in METHODS}}

    @classmethod
    def from_arrays(cls, arrays: dict) -> Calibration:
        labels = np.asarray(arrays["labels"], dtype=np.int64)
        scores = {m: np.asarray(arrays[f"scores_{m}"], dtype=np.float64) for m in METHODS}
        if any(s.shape != labels.shape for s in scores.values()):
            raise ValueError("the conformal calibration's scores and labels differ in length")
        return cls(labels, scores, float(arrays["lambda"]), int(arrays["k_reg"]))


_BLOCK_VALUES = 2**18  # values of a block of rows that calibrate scales and ranks at once


def calibrate(probs: np.ndarray, labels: np.ndarray, seed: int = 0,
              temperature: float | None = None) -> Calibration:
    """Every method's calibration from the calibration images' probabilities (for
    prediction: the temperature-scaled ones; never test images). With ``temperature``,
    ``probs`` are logits (or log-probabilities), scaled here by ``apply_temperature`` a
    block of rows at a time as they are scored: the same numbers as scaling them first,
    without the scaled N x K (178 MB at 135,000 x 165), and in cache-sized blocks twice
    as fast."""
    probs = np.asarray(probs) if temperature is not None else np.asarray(probs, np.float64)
    labels = np.asarray(labels, dtype=np.int64)

    def scaled(rows) -> np.ndarray:
        return probs[rows] if temperature is None else apply_temperature(probs[rows],
                                                                         temperature)

    n, k = probs.shape
    tune = _tuning_rows(n, seed)  # RAPS's lam and k_reg from these, its threshold the rest
    tuned = np.empty((int(tune.sum()), k))  # their probabilities, kept on the way
    p_true, mass, rank = np.empty(n), np.empty(n), np.empty(n, dtype=np.int64)
    step = max(1, _BLOCK_VALUES // max(k, 1))
    taken = 0
    for at in range(0, n, step):  # once, for APS and RAPS
        rows = slice(at, at + step)
        p = scaled(rows)
        p_true[rows], mass[rows], rank[rows] = _true_class_mass(p, labels[rows])
        picked = p[tune[rows]]
        tuned[taken:taken + len(picked)] = picked
        taken += len(picked)
    lam, k_reg = (_tune_raps(tuned, p_true[tune], rank[tune], k) if tune.any()
                  else (RAPS_LAMBDAS[1], 1))
    keep = ~tune
    raps = np.full(n, np.nan)
    raps[keep] = (mass + p_true + _penalty(rank, "raps", lam, k_reg))[keep]
    return Calibration(labels, {"lac": 1.0 - p_true, "aps": mass + p_true, "raps": raps},
                       lam, k_reg)


def fit_conformal(probs: np.ndarray, labels: np.ndarray, method: str = DEFAULT_METHOD,
                  coverage: float = 0.9, class_conditional: bool = False,
                  seed: int = 0) -> ConformalSets:
    """Fit on calibration images (validation: never the test images that are scored)."""
    return calibrate(probs, labels, seed).fit(method, coverage, class_conditional,
                                              num_classes=np.asarray(probs).shape[1])


def _tuning_rows(n: int, seed: int) -> np.ndarray:
    """The random fifth of n calibration images that chooses RAPS's lam and k_reg (a
    mask; none when it or the rest would hold fewer than 2 images)."""
    tune = np.zeros(n, dtype=bool)
    tune[np.random.default_rng(seed).permutation(n)[: int(round(RAPS_TUNING_SHARE * n))]] = True
    if tune.sum() < 2 or (~tune).sum() < 2:
        tune[:] = False
    return tune


def _tune_raps(p: np.ndarray, p_true: np.ndarray, rank_true: np.ndarray, classes: int,
               coverage: float = RAPS_TUNING_COVERAGE) -> tuple[float, int]:
    """RAPS's (lam, k_reg) from the tuning images' probabilities ``p``, and each one's
    true-class probability and rank (``_true_class_mass``): k_reg the coverage quantile
    of the true class's rank, lam the candidate with the smallest mean set size there,
    at ``coverage``."""
    # a set's size needs each rank's mass above it, not which class holds the rank: the
    # values sorted (10x faster than ranking the classes), once for every candidate
    descending = np.sort(p, axis=1)[:, ::-1]
    above = np.cumsum(descending, axis=1)
    above -= descending  # by rank
    above_true = np.take_along_axis(above, rank_true[:, None], axis=1)[:, 0]
    quantile = conformal_quantile(rank_true + 1, coverage)
    k_reg = int(quantile) if math.isfinite(quantile) else classes
    ranks = np.arange(classes)[None, :]
    placed = np.empty_like(above)  # one buffer for every candidate's placements
    best = None
    for lam in RAPS_LAMBDAS:
        threshold = conformal_quantile(
            above_true + p_true + _penalty(rank_true, "raps", lam, k_reg), coverage)
        np.add(above, _penalty(ranks, "raps", lam, k_reg), out=placed)
        size = np.count_nonzero(placed < threshold, axis=1).mean()
        if best is None or size < best[0]:
            best = (size, lam)
    return best[1], k_reg


def covered_and_size(sets: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (its set holds its class, the set's size): the two things a bootstrap
    averages (their weighted means are the coverage and the mean set size)."""
    labels = np.asarray(labels)
    return sets[np.arange(len(labels)), labels], sets.sum(axis=1)


def class_coverage(sets: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per true class: (share of its images covered, their mean set size); NaN when a
    class has no image."""
    covered, size = covered_and_size(sets, labels)
    count = np.bincount(labels, minlength=k).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.bincount(labels, weights=covered, minlength=k) / count,
                np.bincount(labels, weights=size, minlength=k) / count)
