"""Split-conformal sets against hand-computed cases, a plain-loop reference and the
coverage guarantee over many random calibration/test splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from olsdesk.core.conformal import (
    class_coverage,
    conformal_quantile,
    covered_and_size,
    fit_conformal,
    true_class_scores,
)


def test_the_quantile_is_the_finite_sample_corrected_order_statistic():
    scores = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(10 * 0.5) = 5th
    assert conformal_quantile(scores[::-1], 0.8) == 8.0  # order of the input is irrelevant
    assert conformal_quantile(scores, 0.95) == math.inf  # ceil(9.5) = 10 > n: no finite one


def test_scores_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    labels = np.array([1, 2])
    # LAC: 1 - p(true)
    np.testing.assert_allclose(true_class_scores(probs, labels, "lac"), [0.7, 0.7])
    # APS: mass ranked above the true class plus its own: 0.5 + 0.3; 0.6 + 0.3
    np.testing.assert_allclose(true_class_scores(probs, labels, "aps"), [0.8, 0.9])
    # RAPS, lam 0.1, k_reg 1: APS + 0.1 * (rank - 1) for 1-based rank 2 in both
    np.testing.assert_allclose(true_class_scores(probs, labels, "raps", 0.1, 1), [0.9, 1.0])


def test_sets_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.34, 0.33, 0.33]])
    labels = np.array([1, 2, 0])
    aps = fit_conformal(probs, labels, "aps", coverage=0.5)
    # APS true scores 0.8, 0.9, 0.34; n = 3, ceil(4 * 0.5) = 2nd smallest = 0.8
    assert aps.thresholds[0] == pytest.approx(0.8)
    # a class is kept while the mass above it is under 0.8: [0.5 | 0.3 kept (0.5 < 0.8),
    # 0.2 out (0.8)], [0.6, 0.3 (0.6 < 0.8), 0.1 out (0.9)], [all: 0, 0.34, 0.67]
    np.testing.assert_array_equal(aps.sets(probs), [[1, 1, 0], [0, 1, 1], [1, 1, 1]])
    lac = fit_conformal(probs, labels, "lac", coverage=0.5)
    # LAC true scores 0.7, 0.7, 0.66: 2nd smallest 0.7; keep p >= 0.3
    assert lac.thresholds[0] == pytest.approx(0.7)
    np.testing.assert_array_equal(lac.sets(probs), [[1, 1, 0], [0, 1, 1], [1, 1, 1]])
    covered, size = covered_and_size(lac.sets(probs), labels)
    np.testing.assert_array_equal(covered, [True, True, True])
    np.testing.assert_array_equal(size, [2, 2, 3])


def _reference_sets(probs, threshold, method):
    """Plain loops, written from the definitions, not from the module."""
    sets = np.zeros(probs.shape, dtype=bool)
    for i, row in enumerate(probs):
        if method == "lac":
            for k, p in enumerate(row):
                sets[i, k] = 1 - p <= threshold
            continue
        mass = 0.0
        for k in sorted(range(len(row)), key=lambda c: (-row[c], c)):
            if mass < threshold:
                sets[i, k] = True
            mass += row[k]
    return sets


def _model(n, k=6, seed=0, weights=None):
    """A classifier's probabilities on synthetic data: noisy logits favouring the truth."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(k, size=n, p=weights)
    logits = rng.normal(size=(n, k)) * 1.5
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_sets_match_a_plain_loop_reference(method):
    probs, labels = _model(400, seed=3)
    fitted = fit_conformal(probs[:200], labels[:200], method, coverage=0.8)
    np.testing.assert_array_equal(fitted.sets(probs[200:]),
                                  _reference_sets(probs[200:], fitted.thresholds[0], method))


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_sets_made_a_block_of_images_at_a_time_are_the_sets_of_all_at_once(method,
                                                                          monkeypatch):
    from olsdesk.core import calibration

    probs, labels = _model(400, seed=4)
    fitted = fit_conformal(probs[:200], labels[:200], method, coverage=0.8)
    per_class = fit_conformal(probs[:200], labels[:200], method, coverage=0.8,
                              class_conditional=True)
    whole, whole_per_class = fitted.sets(probs[200:]), per_class.sets(probs[200:])
    monkeypatch.setattr(calibration, "ROW_BLOCK_VALUES", 3 * probs.shape[1])  # 3 rows
    np.testing.assert_array_equal(fitted.sets(probs[200:]), whole)
    np.testing.assert_array_equal(per_class.sets(probs[200:]), whole_per_class)
    if method != "raps":  # the plain loop has no RAPS penalty
        np.testing.assert_array_equal(whole, _reference_sets(probs[200:],
                                                             fitted.thresholds[0], method))


class _Given:
    """A fitted scikit-learn classifier whose probabilities are its input (MAPIE needs an
    estimator; the probabilities are the ones olsdesk's sets are made from)."""

    def __init__(self, k: int) -> None:
        from sklearn.base import BaseEstimator, ClassifierMixin

        class Given(ClassifierMixin, BaseEstimator):
            def fit(self, x, y):
                self.classes_ = np.arange(k)
                self.n_features_in_ = k
                return self

            def predict_proba(self, x):
                return np.asarray(x)

            def predict(self, x):
                return np.asarray(x).argmax(1)

        self.estimator = Given().fit(np.eye(k), np.arange(k))


def _mapie(probs, labels, method, coverage):
    import warnings

    from mapie.classification import SplitConformalClassifier  # test-only reference

    mapie = SplitConformalClassifier(_Given(probs.shape[1]).estimator, prefit=True,
                                     confidence_level=coverage, conformity_score=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapie.conformalize(probs, labels)
    return mapie


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_lac_sets_are_mapies(coverage):
    """MAPIE's split-conformal LAC (its own quantile and set rule) on the same calibration
    and test probabilities gives the same sets, image for image."""
    probs, labels = _model(1200, k=10, seed=7)
    mapie = _mapie(probs[:600], labels[:600], "lac", coverage)
    _, theirs = mapie.predict_set(probs[600:])
    ours = fit_conformal(probs[:600], labels[:600], "lac", coverage=coverage).sets(probs[600:])
    np.testing.assert_array_equal(ours, theirs[:, :, 0])


def test_aps_scores_and_sets_are_mapies_at_the_same_threshold():
    """APS: the true class's cumulative mass is MAPIE's (before it subtracts a uniform
    share of the true class's probability: MAPIE's calibration scores are always
    randomized, olsdesk's deterministic, so the thresholds differ by design); with
    olsdesk's threshold, MAPIE's deterministic set rule (include_last_label=True) gives
    the same sets."""
    probs, labels = _model(1200, k=10, seed=8)
    mapie = _mapie(probs[:600], labels[:600], "aps", 0.9)
    score = mapie._mapie_classifier.conformity_score_function_
    cumulative, _ = score.get_true_label_cumsum_proba(labels[:600], probs[:600], np.arange(10))
    np.testing.assert_allclose(true_class_scores(probs[:600], labels[:600], "aps"),
                               cumulative.ravel(), atol=1e-12)
    fitted = fit_conformal(probs[:600], labels[:600], "aps", coverage=0.9)
    score.get_conformity_score_quantiles = lambda *a, **k: np.array([fitted.thresholds[0]])
    _, theirs = mapie.predict_set(probs[600:], conformity_score_params={
        "include_last_label": True})
    np.testing.assert_array_equal(fitted.sets(probs[600:]), theirs[:, :, 0])


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_coverage_holds_over_many_random_splits(method):
    """The guarantee: mean coverage over calibration/test draws is at least the target
    (less three standard errors of the mean over the draws)."""
    coverages, sizes = [], []
    for trial in range(60):
        probs, labels = _model(1500, seed=100 + trial)
        fitted = fit_conformal(probs[:500], labels[:500], method, coverage=0.9, seed=trial)
        covered, size = covered_and_size(fitted.sets(probs[500:]), labels[500:])
        coverages.append(covered.mean())
        sizes.append(size.mean())
    mean, se = np.mean(coverages), np.std(coverages) / np.sqrt(len(coverages))
    assert mean >= 0.9 - 3 * se
    if method == "lac":  # continuous scores: at most 1/(n+1) above the target on average
        assert mean <= 0.9 + 1 / 501 + 3 * se
    assert 1.0 <= np.mean(sizes) < 6  # informative: not every class


def test_class_conditional_covers_every_class_even_a_rare_one():
    weights = [0.55, 0.2, 0.1, 0.08, 0.05, 0.02]
    per_class = []
    for trial in range(40):
        probs, labels = _model(6000, seed=500 + trial, weights=weights)
        fitted = fit_conformal(probs[:3000], labels[:3000], "aps", coverage=0.9,
                               class_conditional=True)
        coverage, _ = class_coverage(fitted.sets(probs[3000:]), labels[3000:], 6)
        per_class.append(coverage)
    mean = np.nanmean(per_class, axis=0)
    se = np.nanstd(per_class, axis=0) / np.sqrt(len(per_class))
    assert np.all(mean >= 0.9 - 3 * se - 1e-9), mean


def test_too_few_calibration_images_for_a_class_put_it_in_every_set():
    probs, labels = _model(300, seed=9)
    labels[labels == 5] = 0
    labels[:3] = 5  # three images of class 5: ceil(4 * 0.9) = 4 > 3
    fitted = fit_conformal(probs, labels, "lac", coverage=0.9, class_conditional=True)
    assert fitted.thresholds[5] == math.inf
    assert fitted.sets(probs)[:, 5].all()
    assert fitted.to_dict()["thresholds"][5] is None  # JSON has no infinity


def test_bad_coverage_and_method_are_refused():
    probs, labels = _model(50)
    with pytest.raises(ValueError, match="coverage"):
        fit_conformal(probs, labels, coverage=1.0)
    with pytest.raises(ValueError, match="unknown conformal method"):
        fit_conformal(probs, labels, method="naive")


def test_calibration_scores_are_each_methods_own_scores_of_the_true_class():
    """calibrate() computes APS's and RAPS's parts once for both: the same numbers as
    each method's own score, RAPS's NaN on the images that tuned it."""
    from olsdesk.core.conformal import calibrate

    rng = np.random.default_rng(5)
    logits = np.round(rng.normal(size=(1500, 9)) * 1.5, 1)  # ties among the classes
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 9, 1500)
    cal = calibrate(probs, labels, seed=2)
    for method in ("lac", "aps"):
        np.testing.assert_array_equal(cal.scores[method],
                                      true_class_scores(probs, labels, method))
    kept = ~np.isnan(cal.scores["raps"])
    assert 0.75 < kept.mean() < 0.85  # a fifth chose lam and k_reg
    np.testing.assert_array_equal(
        cal.scores["raps"][kept],
        true_class_scores(probs[kept], labels[kept], "raps", cal.lam, cal.k_reg))



def test_calibration_from_logits_and_a_temperature_is_that_of_the_scaled_probabilities(
        monkeypatch):
    """``calibrate(logits, temperature=T)`` scales a block of rows at a time as it scores
    them: bit for bit the calibration of ``apply_temperature(logits, T)``, with blocks of
    a few rows (the last one short) and in one block."""
    from olsdesk.core import conformal
    from olsdesk.core.calibration import apply_temperature

    rng = np.random.default_rng(8)
    logits = np.round(rng.normal(size=(1003, 9)) * 2, 1)  # ties among the classes
    labels = rng.integers(0, 9, 1003)
    expected = conformal.calibrate(apply_temperature(logits, 1.7), labels, seed=4).to_arrays()
    for block in (9 * 10, 2**18):
        monkeypatch.setattr(conformal, "_BLOCK_VALUES", block)
        got = conformal.calibrate(logits, labels, seed=4, temperature=1.7).to_arrays()
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("seed", range(8))
def test_raps_tuning_chooses_what_ranking_every_class_chooses(seed):
    """RAPS's lam and k_reg come from sorted values, not from each class's rank: the same
    choice as ranking the classes (ties: the lower class first) and sizing each set from
    its ranked classes, on probabilities with ties."""
    from olsdesk.core.conformal import (
        RAPS_LAMBDAS,
        _true_class_mass,
        _tune_raps,
        _tuning_rows,
    )

    rng = np.random.default_rng(seed)
    logits = np.round(rng.normal(size=(2000, 12)) * (0.5 + seed / 2), 0)  # many ties
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 12, 2000)
    tune = _tuning_rows(2000, seed=3)
    assert tune.sum() == 400
    p, y = probs[tune], labels[tune]
    p_true, _, rank = _true_class_mass(p, y)
    lam, k_reg = _tune_raps(p, p_true, rank, 12)
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked  # by rank
    rank_true = np.argmax(order == y[:, None], axis=1)
    assert k_reg == int(conformal_quantile(rank_true + 1, 0.9))
    rows = np.arange(len(y))
    sizes = []
    for candidate in RAPS_LAMBDAS:
        penalty = candidate * np.maximum(0, np.arange(12) + 1 - k_reg)
        threshold = conformal_quantile(above[rows, rank_true] + p[rows, y]
                                       + penalty[rank_true], 0.9)
        sizes.append(((above + penalty) < threshold).sum(axis=1).mean())
    assert lam == RAPS_LAMBDAS[int(np.argmin(sizes))]
