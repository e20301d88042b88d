"""The vectorised bootstrap against metrics computed the plain way on explicit resamples
(scikit-learn for the rank metrics and class counts, the metric module's own loops for
calibration), and its first-order AUROC/AP against scikit-learn's weighted scores."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from olsdesk.core import bootstrap, metrics
from olsdesk.core.bootstrap import metric_samples, percentile_ci, resample_block


def _model(n=400, k=5, strength=2.0, seed=0, round_to=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1.0, (n, k))
    logits[np.arange(n), labels] += strength
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    if round_to:  # ties, as float32 softmax outputs have
        p = np.round(p, round_to)
        p /= p.sum(1, keepdims=True)
    return p, labels


def _plain(p, y, n_bins=15):
    """Every metric the ordinary way, on an explicit list of images."""
    k = p.shape[1]
    pred = p.argmax(1)
    aurocs = [roc_auc_score(y == c, p[:, c]) for c in range(k) if 0 < (y == c).sum() < len(y)]
    cm = confusion_matrix(y, pred, labels=range(k))
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    return {
        "top1": metrics.topk_accuracy(p, y, 1), "top5": metrics.topk_accuracy(p, y, 5),
        "nll": metrics.negative_log_likelihood(p, y), "brier": metrics.brier_score(p, y),
        "ece": metrics.expected_calibration_error(p, y, n_bins),
        "mce": metrics.maximum_calibration_error(p, y, n_bins),
        "adaptive_ece": metrics.adaptive_calibration_error(p, y, n_bins),
        "classwise_ece": metrics.classwise_calibration_error(p, y, n_bins),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_auroc": float(np.mean(aurocs)),
    }, {
        "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
        "f1": f1_score(y, pred, labels=range(k), average=None, zero_division=np.nan),
        "auroc": np.array([roc_auc_score(y == c, p[:, c]) for c in range(k)]),
        "average_precision": np.array([average_precision_score(y == c, p[:, c])
                                       for c in range(k)]),
    }


@pytest.mark.parametrize("round_to", [None, 2])
def test_values_on_the_test_images_match_scikit_learn_and_the_metric_module(round_to):
    p, y = _model(round_to=round_to)
    result = metric_samples(p, y, resamples=5)
    summary, per_class = _plain(p, y)
    for name, expected in summary.items():
        assert result.value[name] == pytest.approx(expected, abs=1e-9), name
    for name, expected in per_class.items():
        np.testing.assert_allclose(result.class_value[name], expected, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("round_to", [None, 2])
def test_every_resample_equals_the_metrics_of_that_explicit_resample(round_to):
    p, y = _model(n=300, k=4, round_to=round_to)
    result = metric_samples(p, y, resamples=6, seed=3)
    assert result.rank_method == "exact"
    weights = resample_block(len(y), 6, 3, 0)
    assert weights.shape == (300, 6) and (weights.sum(0) == 300).all()
    for r in range(6):
        idx = np.repeat(np.arange(len(y)), weights[:, r].astype(int))
        summary, per_class = _plain(p[idx], y[idx])
        for name, expected in summary.items():
            # float32 sums: rounding far below any interval's width
            assert result.summary[name][r] == pytest.approx(expected, abs=2e-6), (name, r)
        for name, expected in per_class.items():
            np.testing.assert_allclose(result.per_class[name][:, r], expected, atol=2e-6,
                                       err_msg=f"{name} resample {r}")


def test_adaptive_ece_splits_a_repeated_image_across_a_bin_edge_as_the_plain_way():
    """Continuous confidences, no ties: the plain equal-count split of the expanded list
    puts copies of one image in two bins, exactly as the weighted edges do."""
    p, y = _model(n=97, k=3, seed=5)
    result = metric_samples(p, y, resamples=40, seed=1, n_bins=10)
    w = resample_block(97, 40, 1, 0)
    for r in range(40):
        idx = np.repeat(np.arange(97), w[:, r].astype(int))
        expected = metrics.adaptive_calibration_error(p[idx], y[idx], 10)
        assert result.summary["adaptive_ece"][r] == pytest.approx(expected, abs=1e-6)


def test_a_resample_is_n_draws_with_replacement_from_the_seeded_stream():
    """Column r counts how often each image was drawn in resample r: the n draws of
    row r of numpy's seeded integers (the same resamples as olsdesk 0.4's, whatever the
    memory the weights are built in)."""
    n, resamples, seed = 1_001, 7, 4
    w = resample_block(n, resamples, seed, 0)
    draws = np.random.default_rng([seed, 0]).integers(0, n, size=(resamples, n))
    assert w.dtype == np.float32 and w.shape == (n, resamples) and w.flags.c_contiguous
    for r in range(resamples):
        np.testing.assert_array_equal(w[:, r], np.bincount(draws[r], minlength=n))
    assert (w.sum(axis=0) == n).all()


def test_the_weights_are_seeded_and_do_not_depend_on_the_core_count(monkeypatch):
    p, y = _model(n=200)
    a = metric_samples(p, y, resamples=300, seed=7)
    monkeypatch.setattr(bootstrap, "_THREADS", 1)
    b = metric_samples(p, y, resamples=300, seed=7)
    np.testing.assert_array_equal(a.summary["top1"], b.summary["top1"])
    assert len(a.summary["top1"]) == 300
    c = metric_samples(p, y, resamples=300, seed=8)
    assert not np.array_equal(a.summary["top1"], c.summary["top1"])
    # on many cores, only as many blocks are scored at once as SCORING_BYTES holds
    assert bootstrap._block_threads(200_000) == 4 and bootstrap._block_threads(2_000) > 64


def test_top1_interval_matches_the_binomial_standard_error():
    p, y = _model(n=2000, strength=1.5)
    result = metric_samples(p, y, resamples=1000, per_class=False)
    acc = result.value["top1"]
    lo, hi = result.interval("top1")
    half = 1.96 * np.sqrt(acc * (1 - acc) / len(y))
    assert lo < acc < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)


def test_the_exact_ways_cost_is_counted_without_building_the_curves():
    """Which way AUROC and AP are resampled is chosen from this count, before any
    class's curves exist (the linearised way then builds them a class at a time)."""
    p, y = _model(n=500, k=4, round_to=2)  # rounded: ties at the lowest positive
    y[y == 3] = 0  # a class without a positive
    for c in range(4):
        scores, positive = p[:, c], y == c
        expected = bootstrap._RankCurves(scores, positive).exact_cost
        assert bootstrap.exact_rank_cost(scores, positive) == expected
    # by hand: positives 0.2 and 0.5; negatives 0.1 (below), 0.2 (tied), 0.9 (above)
    assert bootstrap.exact_rank_cost(np.array([0.1, 0.2, 0.2, 0.5, 0.9]),
                                     np.array([False, False, True, True, False])) == 4


def test_first_order_auroc_and_ap_are_scikit_learns_weighted_derivatives():
    """The influence of image i is d metric / d w_i at w = 1: checked by finite
    differences of scikit-learn's sample-weighted AUROC and AP."""
    p, y = _model(n=120, k=3, round_to=2)
    curve = bootstrap._RankCurves(p[:, 1], y == 1)
    auroc, ap, auroc_if, ap_if = curve.influence(len(y))
    assert auroc == pytest.approx(roc_auc_score(y == 1, p[:, 1]))
    assert ap == pytest.approx(average_precision_score(y == 1, p[:, 1]))
    eps = 1e-6
    for i in range(0, 120, 7):
        w = np.ones(120)
        w[i] += eps
        d_auroc = (roc_auc_score(y == 1, p[:, 1], sample_weight=w) - auroc) / eps
        d_ap = (average_precision_score(y == 1, p[:, 1], sample_weight=w) - ap) / eps
        assert auroc_if[i] == pytest.approx(d_auroc, abs=1e-5), i
        assert ap_if[i] == pytest.approx(d_ap, abs=1e-5), i


def test_first_order_intervals_agree_with_exact_ones_on_a_large_test_set(monkeypatch):
    p, y = _model(n=3000, k=4, strength=1.2)
    exact = metric_samples(p, y, resamples=400, seed=2)
    monkeypatch.setattr(bootstrap, "EXACT_RANK_BUDGET", 0)
    linear = metric_samples(p, y, resamples=400, seed=2)
    assert (exact.rank_method, linear.rank_method) == ("exact", "linearised")
    assert linear.value["macro_auroc"] == pytest.approx(exact.value["macro_auroc"], abs=1e-12)
    for c in range(4):
        for metric in ("auroc", "average_precision"):
            e, lin = exact.per_class[metric][c], linear.per_class[metric][c]
            assert np.corrcoef(e, lin)[0, 1] > 0.99
            width = np.subtract(*percentile_ci(e)[::-1])
            assert np.allclose(percentile_ci(lin), percentile_ci(e), atol=0.1 * width)


def test_a_class_missing_from_a_resample_is_left_out_not_zero():
    y = np.array([0] * 50 + [1] * 49 + [2])  # class 2: one image, absent from most resamples
    p = np.full((100, 3), 0.1)
    p[np.arange(100), y] = 0.8
    result = metric_samples(p, y, resamples=200, seed=0)
    assert np.isnan(result.per_class["sensitivity"][2]).sum() > 50
    assert np.isfinite(result.summary["balanced_accuracy"]).all()
    assert np.isfinite(result.summary["macro_auroc"]).all()
    lo, hi = result.class_intervals("sensitivity")[2]
    assert lo == hi == 1.0


def test_percentile_interval_ignores_undefined_resamples():
    assert percentile_ci(np.array([np.nan, 1.0, 2.0, 3.0]), level=0.5) == (1.5, 2.5)
    assert all(np.isnan(percentile_ci(np.array([np.nan]))))


def test_the_scorer_prepares_in_row_chunks_with_the_same_numbers(monkeypatch):
    """Its N x K temporaries (top-5, Brier, classwise bins) are made a block of rows at a
    time: any block size gives the numbers of one block of all rows."""
    from olsdesk.core import bootstrap

    rng = np.random.default_rng(0)
    n, k = 3000, 17
    logits = rng.normal(size=(n, k)) * 2
    labels = rng.integers(0, k, n)
    logits[np.arange(n), labels] += 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[5] = 1.0 / k  # a row of ties
    whole = bootstrap.metric_samples(probs, labels, resamples=100, seed=1)
    from olsdesk.core import calibration

    monkeypatch.setattr(calibration, "ROW_BLOCK_VALUES", 1000)  # 59 rows a block
    chunked = bootstrap.metric_samples(probs, labels, resamples=100, seed=1)
    assert chunked.value == whole.value
    for field in ("class_value", "summary", "per_class"):
        a, b = getattr(whole, field), getattr(chunked, field)
        assert all(np.array_equal(a[m], b[m], equal_nan=True) for m in a), field


def test_resamples_scored_a_few_at_a_time_give_the_numbers_of_all_at_once(monkeypatch):
    """Adaptive ECE, the debiased L2 error and AURC take their N-long running sums a few
    resamples at a time; one at a time gives the same numbers (to float rounding: a
    sum over one column may be added pairwise)."""
    from olsdesk.core import bootstrap

    p, y = _model(n=2000, k=5, seed=3)
    whole = bootstrap.metric_samples(p, y, resamples=60, seed=2, per_class=False)
    monkeypatch.setattr(bootstrap, "COLUMN_VALUES", 1)  # one resample a chunk
    single = bootstrap.metric_samples(p, y, resamples=60, seed=2, per_class=False)
    for metric in ("adaptive_ece", "l2_ce_debiased", "aurc", "eaurc"):
        np.testing.assert_allclose(single.summary[metric], whole.summary[metric],
                                   rtol=1e-12, atol=1e-15, err_msg=metric)


def test_tied_scores_and_the_smooth_band_a_few_resamples_at_a_time_are_all_at_once(
        monkeypatch):
    """AURC over tied confidences (the tie groups' sums) and the smooth reliability band
    (its float64 weights) take a few resamples at a time: one at a time gives the same
    numbers (AURC to float rounding: a sum over one column may be added pairwise; the
    band bit for bit)."""
    from olsdesk.core import bootstrap

    p, y = _model(n=2000, k=5, seed=4)
    p = np.round(p, 2)  # many images share a confidence
    p /= p.sum(axis=1, keepdims=True)
    conf, hits = p.max(axis=1), p.argmax(axis=1) == y
    whole = bootstrap.metric_samples(p, y, resamples=60, seed=2, per_class=False)
    band = bootstrap.smooth_reliability_band(conf, hits, 0.05, 60, 2)
    monkeypatch.setattr(bootstrap, "COLUMN_VALUES", 1)
    single = bootstrap.metric_samples(p, y, resamples=60, seed=2, per_class=False)
    assert bootstrap.Selective(conf, hits).tied
    for metric in ("aurc", "eaurc"):
        np.testing.assert_allclose(single.summary[metric], whole.summary[metric],
                                   rtol=1e-12, atol=1e-15, err_msg=metric)
    np.testing.assert_array_equal(bootstrap.smooth_reliability_band(conf, hits, 0.05, 60, 2),
                                  band)


def test_column_percentiles_are_nanpercentiles():
    """The band's percentiles, vectorised where a column has no NaN: numpy's
    nanpercentile's numbers bit for bit, NaN columns NaN, on columns of every mix."""
    import warnings

    from olsdesk.core.bootstrap import column_percentiles

    rng = np.random.default_rng(0)
    for _ in range(100):
        values = rng.normal(size=(rng.integers(1, 120), rng.integers(1, 50)))
        values[rng.random(values.shape) < 0.05] = np.nan
        values[:, rng.random(values.shape[1]) < 0.1] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            expected = np.nanpercentile(values, [2.5, 97.5], axis=0)
        np.testing.assert_array_equal(column_percentiles(values, [2.5, 97.5]), expected)
