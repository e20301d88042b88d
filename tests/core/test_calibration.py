"""Temperature scaling against a dense grid and a known generating temperature; vector
scaling and histogram binning against known miscalibrations and a hand-computed case."""

import numpy as np
import pytest
import torch

from olsdesk.core.calibration import T_RANGE, apply_temperature, fit_temperature


def nll_at_temperature(logits, labels, temperature):
    """The reference: float64 NLL of softmax(logits / T), by scipy."""
    from scipy.special import log_softmax

    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def golden_section_temperature(logits, labels, iterations=80):
    """olsdesk 0.3's fit, kept as the reference: a float64 golden-section search on log T
    (the NLL is unimodal there)."""
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(iterations):
        c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll_at_temperature(logits, labels, np.exp(c)) < nll_at_temperature(
                logits, labels, np.exp(d)):
            hi = d
        else:
            lo = c
    return float(np.exp((lo + hi) / 2.0))


def test_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 6))
    true_t = 2.5
    probs = apply_temperature(logits, true_t)
    labels = np.array([rng.choice(6, p=p) for p in probs])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_matches_a_dense_grid_search():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (500, 5))
    labels = np.where(rng.random(500) < 0.7, logits.argmax(1), rng.integers(0, 5, 500))
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([nll_at_temperature(logits, labels, t) for t in grid])]
    assert fit_temperature(logits, labels) == pytest.approx(best, rel=2e-3)


def test_nll_matches_torch_and_log_probs_work_as_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 4))
    labels = rng.integers(0, 4, 50)
    ref = torch.nn.functional.cross_entropy(torch.tensor(logits / 1.7), torch.tensor(labels))
    assert nll_at_temperature(logits, labels, 1.7) == pytest.approx(ref.item())
    log_probs = np.log(apply_temperature(logits, 1.0))
    assert fit_temperature(log_probs, labels) == pytest.approx(fit_temperature(logits, labels))


@pytest.mark.parametrize("seed, scale, accuracy", [(4, 3.0, 0.6), (5, 8.0, 0.9), (6, 0.3, 0.2),
                                                   (7, 1.0, 0.99)])
def test_newton_fit_equals_the_golden_section_search_to_1e_4(seed, scale, accuracy):
    """Over- and under-confident sets, 165 classes (RadImageNet's), from float32 input:
    the same T as a float64 golden-section search of 80 steps."""
    rng = np.random.default_rng(seed)
    n, k = 3000, 165
    logits = rng.normal(0, scale, (n, k))
    labels = np.where(rng.random(n) < accuracy, logits.argmax(1), rng.integers(0, k, n))
    expected = golden_section_temperature(logits, labels)
    assert fit_temperature(logits.astype(np.float32), labels) == pytest.approx(expected, rel=1e-4)


def test_a_large_set_starts_from_a_sample_and_ends_at_the_same_temperature(monkeypatch):
    """Above four times the warm start's rows the fit starts from a strided sample's:
    the same T as the golden-section search, in fewer passes over every image."""
    from olsdesk.core import calibration

    rng = np.random.default_rng(8)
    n, k = 70_000, 10
    logits = rng.normal(0, 3.0, (n, k))
    labels = np.where(rng.random(n) < 0.7, logits.argmax(1), rng.integers(0, k, n))
    assert n // calibration._WARM_START_ROWS >= 4
    expected = golden_section_temperature(logits, labels)
    rows = []
    slopes = calibration._nll_slopes

    def counted(z, picked, beta):
        rows.append(len(z))
        return slopes(z, picked, beta)

    monkeypatch.setattr(calibration, "_nll_slopes", counted)
    fitted = calibration.temperature_fit(logits.astype(np.float32), labels)
    assert fitted.temperature == pytest.approx(expected, rel=1e-4)
    assert rows.count(n) <= 3 and min(rows) < n / 3  # the sample's passes, then the full


def test_a_minimum_beyond_the_range_gives_the_range_end_and_flat_rows_do_not_hang():
    # every image right with a margin: the NLL falls as T shrinks, down to the range's end
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]] * 10)
    labels = np.array([0, 1] * 10)
    assert fit_temperature(logits, labels) == pytest.approx(T_RANGE[0])
    # every image wrong and confident: the NLL falls as T grows
    assert fit_temperature(logits, (labels + 1) % 3) == pytest.approx(T_RANGE[1])
    # uniform predictions (an untrained model; log-probabilities all equal): any T is
    # as good, and the fit returns one in range
    assert T_RANGE[0] <= fit_temperature(np.zeros((20, 3)), labels) <= T_RANGE[1]
    # log(0) = -inf in a row is a probability of 0, not a NaN
    log_probs = np.log(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]] * 10))
    with np.errstate(divide="ignore"):
        t = fit_temperature(log_probs, labels)
    expected = golden_section_temperature(np.maximum(log_probs, -1e4), labels)
    assert t == pytest.approx(expected, rel=1e-4)


def test_cross_fitted_confidence_never_scores_an_image_with_its_own_fit():
    """Each half is scaled by the T fitted on the other half: recomputed by hand here,
    with the reference fit; the confidence is the scaled top-class probability."""
    from olsdesk.core.calibration import cross_fitted_confidence, temperature_fit

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (401, 5))
    labels = np.where(rng.random(401) < 0.6, logits.argmax(1), rng.integers(0, 5, 401))
    order = np.random.default_rng(7).permutation(401)
    a, b = order[:200], order[200:]
    expected = np.empty_like(logits)
    expected[b] = apply_temperature(logits[b], golden_section_temperature(logits[a], labels[a]))
    expected[a] = apply_temperature(logits[a], golden_section_temperature(logits[b], labels[b]))
    confidence = cross_fitted_confidence(temperature_fit(logits, labels), seed=7)
    np.testing.assert_allclose(confidence, expected.max(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(expected.argmax(axis=1), logits.argmax(axis=1))


def _per_class_miscalibrated(n: int, k: int, seed: int):
    """Log-probabilities whose classes are over- and under-confident by different scales
    and biased by different amounts: what one temperature cannot undo."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.normal(3, 1.5, size=n)
    logits = logits * np.linspace(0.6, 1.8, k) + np.linspace(-1, 1, k)
    return logits - np.log(np.exp(logits).sum(1, keepdims=True)), y


def test_vector_scaling_starts_at_the_temperature_and_beats_it_where_classes_differ():
    from olsdesk.core.calibration import (
        apply_vector_scaling,
        fit_temperature,
        fit_vector_scaling,
    )

    z, y = _per_class_miscalibrated(4000, 6, seed=0)
    test_z, test_y = _per_class_miscalibrated(4000, 6, seed=1)
    t = fit_temperature(z, y)
    scale, bias = fit_vector_scaling(z, y, t)
    probs = apply_vector_scaling(test_z, scale, bias)
    vector_nll = -np.log(probs[np.arange(len(test_y)), test_y]).mean()
    assert vector_nll < nll_at_temperature(test_z, test_y, t) - 0.05
    # one temperature's miscalibration only: vector scaling finds (about) that temperature
    z = np.random.default_rng(2).normal(0, 3, (3000, 5))
    y = _sample(z / 2.0, seed=3)
    scale, bias = fit_vector_scaling(z, y, 1.0)
    np.testing.assert_allclose(scale, 0.5, atol=0.06)
    np.testing.assert_allclose(bias - bias.mean(), 0.0, atol=0.1)


@pytest.mark.parametrize("limit", [None, 1500])
def test_vector_scaling_finds_the_minimum_a_general_optimiser_finds(monkeypatch, limit):
    """The Newton fit against scipy's BFGS run to a tight tolerance on the same objective,
    written out here (the ridged, weighted NLL of softmax(w z + b)) with finite-difference
    gradients: the same scales and biases, on every image and on a weighted sample."""
    from scipy.optimize import minimize

    from olsdesk.core import calibration

    z, y = _per_class_miscalibrated(4000, 6, seed=5)
    t = calibration.fit_temperature(z, y)
    if limit:
        monkeypatch.setattr(calibration, "VECTOR_FIT_IMAGES", limit)
    rows, weight = calibration.stratified_sample(y, limit or len(y))
    assert len(rows) < len(y) if limit else len(rows) == len(y)
    zs, ys, weight = z[rows], y[rows], weight / weight.sum()

    def objective(theta):
        a = zs * theta[:6] + theta[6:]
        log_softmax = a - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - a.max(1, keepdims=True)
        ridge = calibration.VECTOR_RIDGE / 2 * (((theta[:6] - 1 / t) ** 2).sum()
                                                + (theta[6:] ** 2).sum())
        return -(weight * log_softmax[np.arange(len(ys)), ys]).sum() + ridge

    start = np.r_[np.full(6, 1 / t), np.zeros(6)]
    expected = minimize(objective, start, method="BFGS", options={"gtol": 1e-9}).x
    scale, bias = calibration.fit_vector_scaling(z, y, t)
    np.testing.assert_allclose(np.r_[scale, bias], expected, atol=1e-4)
    assert objective(np.r_[scale, bias]) <= objective(expected) + 1e-10
    assert objective(np.r_[scale, bias]) < objective(start) - 0.01


def test_the_stratified_sample_keeps_rare_classes_and_weights_back_to_the_counts():
    from olsdesk.core.calibration import stratified_sample

    labels = np.repeat([0, 1, 2, 3], [5, 40, 300, 1000])
    rows, weight = stratified_sample(labels, 200)
    kept = np.bincount(labels[rows], minlength=4)
    # classes 0 and 1 whole (45 rows), 155 left for the two large ones: 77 each
    np.testing.assert_array_equal(kept, [5, 40, 77, 77])
    assert len(np.unique(rows)) == len(rows) == 199
    # weighted counts are the full counts: sums over the sample estimate full sums
    np.testing.assert_allclose(np.bincount(labels[rows], weights=weight), [5, 40, 300, 1000])
    rows, weight = stratified_sample(labels[:30], 200)  # small: every row, weight 1
    np.testing.assert_array_equal(rows, np.arange(30))
    assert (weight == 1).all()


def test_vector_scaling_on_a_weighted_sample_fits_as_well_as_on_every_image(monkeypatch):
    """Above VECTOR_FIT_IMAGES the fit runs on a stratified, weighted sample: on held-out
    images of an imbalanced population its NLL is within 1 % of the full fit's."""
    from olsdesk.core import calibration

    prior = np.array([0.6, 0.25, 0.1, 0.04, 0.01])
    rng = np.random.default_rng(4)

    def draw(n):
        y = rng.choice(5, size=n, p=prior)
        z = rng.normal(0, 1.5, (n, 5))
        z[np.arange(n), y] += 1.5
        z = 2.5 * z + np.array([0.5, -0.5, 0.0, 1.0, -1.0])  # sharp, biased per class
        return z - np.log(np.exp(z).sum(1, keepdims=True)), y

    z, y = draw(6000)
    test_z, test_y = draw(6000)
    t = calibration.fit_temperature(z, y)

    def held_out(scale, bias):
        p = calibration.apply_vector_scaling(test_z, scale, bias)
        return -np.log(p[np.arange(len(test_y)), test_y]).mean()

    full = held_out(*calibration.fit_vector_scaling(z, y, t))
    monkeypatch.setattr(calibration, "VECTOR_FIT_IMAGES", 1500)
    sampled = held_out(*calibration.fit_vector_scaling(z, y, t))
    assert sampled <= full * 1.01
    assert sampled < nll_at_temperature(test_z, test_y, t) - 0.02  # still beats one T


def _sample(logits: np.ndarray, seed: int) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    u = np.random.default_rng(seed).uniform(size=(len(p), 1))
    return (p.cumsum(1) < u).sum(1)


def test_histogram_binning_by_hand():
    """Two classes, 2 bins of equal count a class: each bin's share of its class, shrunk
    by one image toward the class frequency; rows renormalised."""
    from olsdesk.core.calibration import apply_histogram_binning, fit_histogram_binning

    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])  # class 0 frequency 1/4, class 1: 3/4
    edges, values = fit_histogram_binning(probs, labels, n_bins=2)
    np.testing.assert_allclose(edges[:, 0], [0.55, 0.45])  # the medians
    # class 0: low bin {0.3, 0.2} has 0 of class 0, high bin {0.9, 0.8} has 1
    np.testing.assert_allclose(values[0], [(0 + 0.25) / 3, (1 + 0.25) / 3])
    # class 1: low bin {0.1, 0.2} has 1, high bin {0.7, 0.8} has 2
    np.testing.assert_allclose(values[1], [(1 + 0.75) / 3, (2 + 0.75) / 3])
    out = apply_histogram_binning(np.array([[0.95, 0.05]]), edges, values)
    expected = np.array([values[0, 1], values[1, 0]])
    np.testing.assert_allclose(out[0], expected / expected.sum())


def test_equal_count_edges_are_numpys_quantiles_bit_for_bit_with_the_counts_below():
    """The bucketed selection against ``np.quantile`` itself on what a class's column can
    hold: softmax outputs over many scales, exact ties, zeros and ones, every value in
    one bucket, 1 to 3 values, other bin counts; and what it hands to np.quantile
    (negative, infinite, NaN, float32). The count below each edge, read off the same
    buckets, is the count of a pass over the column."""
    from olsdesk.core.calibration import edges_and_counts_below

    rng = np.random.default_rng(11)
    logits = rng.normal(size=(20_000, 40)) * np.linspace(0.5, 8, 40)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    columns = list(np.ascontiguousarray(probs.T))
    columns += [np.round(rng.random(5000), 2), np.zeros(300), np.ones(300),
                np.r_[np.zeros(100), np.ones(100)], 1.0 + rng.random(4000) * 1e-9,
                rng.random(1), rng.random(2), rng.random(3), rng.random(3000) ** 30,
                np.r_[-rng.random(50), rng.random(50)], np.r_[rng.random(9), np.inf],
                np.r_[rng.random(9), np.nan]]
    for column in columns:
        column = np.ascontiguousarray(column, dtype=np.float64)
        for bins in (2, 10, 15, 64):
            q = np.arange(1, bins) / bins
            with np.errstate(invalid="ignore"):  # numpy's own interpolation at inf
                edges, below = edges_and_counts_below(column, q)
                np.testing.assert_array_equal(edges, np.quantile(column, q))
            np.testing.assert_array_equal(below, [np.count_nonzero(column < e) for e in edges])
    short = rng.random(1000).astype(np.float32)
    np.testing.assert_array_equal(edges_and_counts_below(short, q)[0], np.quantile(short, q))


def test_histogram_bins_hold_what_their_edges_say_with_ties_and_absent_classes():
    """Each bin's count and positives, against binning every image by its edges
    (searchsorted's "right": an image on an edge is in the bin above it), on probabilities
    with many exact ties at the edges and a class no image has."""
    from olsdesk.core.calibration import fit_histogram_binning

    rng = np.random.default_rng(4)
    logits = np.round(rng.normal(size=(2000, 6)) * 2, 0)  # few distinct values: ties
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.choice(5, size=2000)  # class 5 has no image
    edges, values = fit_histogram_binning(probs, labels, n_bins=15)
    for c in range(6):
        np.testing.assert_array_equal(edges[c], np.quantile(probs[:, c], np.arange(1, 15) / 15))
        b = np.searchsorted(edges[c], probs[:, c], side="right")
        count = np.bincount(b, minlength=15)
        positive = np.bincount(b[labels == c], minlength=15)
        prior = np.mean(labels == c)
        np.testing.assert_array_equal(values[c], (positive + prior) / (count + 1.0))


def _fitted(log_probs, labels, temperature):
    """Every recalibrator fitted, as the epoch end fits them."""
    from olsdesk.core import calibration

    return calibration.Recalibration(
        temperature, *calibration.fit_vector_scaling(log_probs, labels, temperature),
        *calibration.fit_histogram_binning(np.exp(log_probs), labels))


def test_a_recalibration_round_trips_and_refuses_what_does_not_fit():
    from olsdesk.core.calibration import Recalibration

    z, y = _per_class_miscalibrated(600, 4, seed=4)
    fitted = _fitted(z, y, 1.3)
    again = Recalibration.from_arrays(1.3, fitted.to_arrays())
    for method in ("temperature", "vector", "histogram"):
        np.testing.assert_array_equal(again.apply(method, z), fitted.apply(method, z))
        np.testing.assert_allclose(fitted.apply(method, z).sum(1), 1.0)
    assert Recalibration(1.0).methods == ("temperature",)
    with pytest.raises(ValueError, match="no vector"):
        Recalibration(1.0).apply("vector", z)
    with pytest.raises(ValueError, match="does not fit 5 classes"):
        fitted.check(5)


def test_recalibrated_probabilities_made_a_block_of_rows_at_a_time_are_the_same(monkeypatch):
    """Temperature, vector scaling and histogram binning are functions of each row alone:
    computed a few rows at a time (as at 200,000 x 165, to keep their temporaries small)
    they are bit for bit those computed at once, and the temperature's are scipy's."""
    from scipy.special import softmax

    from olsdesk.core import calibration

    rng = np.random.default_rng(2)
    log_probs = np.log(softmax(rng.normal(size=(500, 7)) * 3, axis=1))
    labels = rng.integers(0, 7, 500)
    fitted = _fitted(log_probs, labels, 1.7)
    whole = {m: fitted.apply(m, log_probs) for m in fitted.methods}
    monkeypatch.setattr(calibration, "ROW_BLOCK_VALUES", 7 * 11)  # 11 rows a block
    for method in fitted.methods:
        np.testing.assert_array_equal(fitted.apply(method, log_probs), whole[method])
    np.testing.assert_allclose(whole["temperature"], softmax(log_probs / 1.7, axis=1),
                               rtol=1e-12)
