"""Calibration measured less wrongly: smooth ECE, the debiased L2 error and their
bootstrap, checked against hand-computed cases, a brute-force kernel sum and the
published implementations (relplot, uncertainty-calibration)."""

from __future__ import annotations

import calibration as kumar  # uncertainty-calibration (Kumar et al.), test-only
import numpy as np
import pytest
import relplot  # Blasiok & Nakkiran's smooth ECE, test-only

from olsdesk.core import metrics
from olsdesk.core.bootstrap import (
    interval,
    metric_samples,
    resample_block,
    smooth_reliability_band,
)


def _binary(n: int, power: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.3, 1.0, size=n)
    return conf, (rng.uniform(size=n) < conf**power).astype(float)


def _model(n: int, k: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.normal(size=(n, k)) * 2.5)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row**1.3 / (row**1.3).sum()) for row in p])
    return p, y


def test_smooth_ece_of_one_constant_gap_is_that_gap():
    # one confidence, 70 % right: the smoothed residual is 0.1 everywhere, at any bandwidth
    conf = np.full(100, 0.8)
    hits = np.r_[np.ones(70), np.zeros(30)]
    found = metrics.smooth_reliability(conf, hits)
    assert found.value == pytest.approx(0.1, abs=1e-12)
    assert found.bandwidth == pytest.approx(0.1, abs=1e-9)
    # perfectly calibrated in expectation and large: small, at the bandwidth floor or near
    conf, hits = _binary(200_000, 1.0)
    assert metrics.smooth_reliability(conf, hits).value < 0.01


@pytest.mark.parametrize("n,power", [(300, 1.3), (2000, 1.0), (2000, 2.0), (500, 0.6),
                                     (20_000, 1.1)])
def test_smooth_ece_matches_relplot(n, power):
    conf, hits = _binary(n, power)
    ours = metrics.smooth_reliability(conf, hits)
    theirs, width = relplot.smECE(conf, hits, return_width=True)
    # relplot bisects the bandwidth to 2^-10 and samples its kernel on a coarser grid
    assert ours.value == pytest.approx(theirs, abs=1.5e-3)
    assert ours.bandwidth == pytest.approx(width, abs=2e-3)
    assert ours.value == pytest.approx(ours.bandwidth, abs=1e-9)  # the fixed point


def test_the_smoothed_curve_is_the_reflected_kernel_regression():
    """At a given bandwidth the curve is t - sum K(t, f_i) r_i / sum K(t, f_i), with K the
    Gaussian reflected at 0 and 1: summed here image by image, reflections and all."""
    conf, hits = _binary(400, 1.5, seed=3)
    sigma = 0.07
    found = metrics.smooth_reliability(conf, hits, bandwidth=sigma)
    t = np.linspace(0.05, 0.95, 19)
    shifts = np.arange(-4, 5)
    images = np.concatenate([2 * shifts[:, None] + conf, 2 * shifts[:, None] - conf]).ravel()
    residual = np.tile(conf - hits, 2 * len(shifts))
    kernel = np.exp(-0.5 * ((t[:, None] - images[None, :]) / sigma) ** 2)
    expected = t - (kernel @ residual) / kernel.sum(1)
    got = np.interp(t, found.confidence, found.accuracy)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    density = np.interp(t, found.confidence, found.density)
    np.testing.assert_allclose(density / density.mean(),
                               kernel.sum(1) / kernel.sum(1).mean(), rtol=1e-2)


@pytest.mark.parametrize("n,k", [(300, 5), (2000, 12), (5000, 3)])
def test_debiased_l2_matches_kumar_et_al(n, k):
    p, y = _model(n, k)
    assert metrics.debiased_l2_calibration_error(p, y) == pytest.approx(
        kumar.lower_bound_scaling_top_ce(p, y, p=2, debias=True, num_bins=15), abs=1e-12)


def test_the_bootstrap_scores_each_resample_as_the_expanded_image_list():
    p, y = _model(360, 12)
    result = metric_samples(p, y, resamples=300, per_class=False)
    assert result.value["smooth_ece"] == pytest.approx(metrics.smooth_ece(p, y), abs=1e-12)
    assert result.value["l2_ce_debiased"] == pytest.approx(
        metrics.debiased_l2_calibration_error(p, y), abs=1e-12)
    weights = resample_block(360, 300, 0, 0)
    for r in (0, 7, 123):
        rows = np.repeat(np.arange(360), weights[:, r].astype(int))
        assert result.summary["smooth_ece"][r] == pytest.approx(
            metrics.smooth_ece(p[rows], y[rows]), abs=1e-6)
        # the resample's equal-count bins may split a repeated image in two; with the
        # expanded list that image lands whole in one bin: equal up to that image
        assert result.summary["l2_ce_debiased"][r] == pytest.approx(
            metrics.debiased_l2_calibration_error(p[rows], y[rows]), abs=5e-3)


def test_calibration_intervals_are_centred_on_the_value():
    p, y = _model(360, 12)
    result = metric_samples(p, y, resamples=500, per_class=False)
    # the resamples of classwise ECE lie above its value: a percentile interval misses it
    samples = result.summary["classwise_ece"]
    assert np.percentile(samples, 2.5) > result.value["classwise_ece"]
    for name in ("ece", "adaptive_ece", "classwise_ece", "smooth_ece", "l2_ce_debiased"):
        lo, hi = result.interval(name)
        assert 0.0 <= lo <= result.value[name] <= hi, name
        width = np.diff(np.percentile(result.summary[name], [2.5, 97.5]))[0]
        assert hi - lo <= width + 1e-12  # as wide as the resamples' spread, or clipped at 0
    # accuracy keeps the plain percentile interval
    assert interval("top1", 0.5, np.array([0.6, 0.7, 0.8])) == pytest.approx((0.6050, 0.7950))
    # never below 0
    assert interval("ece", 0.01, np.array([0.02, 0.06, 0.07]))[0] == 0.0


def test_the_smooth_band_covers_its_curve_where_there_are_images():
    conf, hits = _binary(3000, 1.3, seed=5)
    found = metrics.smooth_reliability(conf, hits)
    band = smooth_reliability_band(conf, hits, found.bandwidth, resamples=200)
    inside = (found.confidence > 0.35) & (found.confidence < 0.95)
    assert np.all(band[0, inside] <= found.accuracy[inside] + 1e-9)
    assert np.all(found.accuracy[inside] <= band[1, inside] + 1e-9)
    truth = found.confidence[inside] ** 1.3
    assert np.mean((band[0, inside] <= truth) & (truth <= band[1, inside])) > 0.8
