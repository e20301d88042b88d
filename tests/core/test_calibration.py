"""Temperature scaling against a dense grid and a known generating temperature."""

import numpy as np
import pytest
import torch

from olsdesk.core.calibration import apply_temperature, fit_temperature, nll_at_temperature


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


def test_cross_fitted_scaling_never_scores_an_image_with_its_own_fit():
    """Each half is scaled by the T fitted on the other half: recomputed by hand here."""
    from olsdesk.core.calibration import cross_fitted_scaling

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (401, 5))
    labels = np.where(rng.random(401) < 0.6, logits.argmax(1), rng.integers(0, 5, 401))
    order = np.random.default_rng(7).permutation(401)
    a, b = order[:200], order[200:]
    expected = np.empty_like(logits)
    expected[b] = apply_temperature(logits[b], fit_temperature(logits[a], labels[a]))
    expected[a] = apply_temperature(logits[a], fit_temperature(logits[b], labels[b]))
    scaled = cross_fitted_scaling(logits, labels, seed=7)
    np.testing.assert_allclose(scaled, expected)
