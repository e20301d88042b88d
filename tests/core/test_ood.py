"""Unfamiliar inputs: each estimator against an independent computation (scikit-learn's
Ledoit-Wolf covariance and ROC AUC, scipy's logsumexp, a full-matrix Mahalanobis
distance), and the threshold's promise on fresh samples."""

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.covariance import ledoit_wolf
from sklearn.metrics import roc_auc_score

from olsdesk.core import ood


def blobs(n, d=12, k=3, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (k, d))
    labels = rng.integers(0, k, n)
    mixing = np.random.default_rng(98).normal(0, 1, (d, d)) / np.sqrt(d)
    return centres[labels] + rng.normal(0, 1, (n, d)) @ mixing + shift, labels


def full_distance(features, labels, k, queries):
    """min over classes of (x - mu)' C^-1 (x - mu), C = scikit-learn's Ledoit-Wolf matrix."""
    means = np.stack([features[labels == c].mean(0) for c in range(k)])
    cov, _ = ledoit_wolf(features - means[labels], assume_centered=True)
    inv = np.linalg.inv(cov)
    diffs = queries[:, None, :] - means[None]
    return np.einsum("nkd,de,nke->nk", diffs, inv, diffs).min(axis=1)


# more images than features, fewer, and both beyond the 1,024 directions olsdesk 0.3 kept
@pytest.mark.parametrize("n, d", [(200, 12), (40, 64), (1100, 1050), (1050, 1100)])
def test_mahalanobis_matches_a_full_matrix_computation(n, d):
    features, labels = blobs(n, d)
    centred = features - np.stack([features[labels == c].mean(0) for c in range(3)])[labels]
    shrinkage, _ = ood.ledoit_wolf_shrinkage(centred)
    assert shrinkage == pytest.approx(ledoit_wolf(centred, assume_centered=True)[1], rel=1e-9)
    queries, _ = blobs(30, d, seed=1, shift=0.5)
    density = ood.fit_density(features, labels, 3)
    assert -density.score(queries) == pytest.approx(full_distance(features, labels, 3, queries),
                                                    rel=1e-6)


# the others' covariance, and (fewer images than features) the sample's Gram matrix
@pytest.mark.parametrize("n, d", [(200, 12), (40, 64)])
def test_a_held_out_fold_scores_as_the_density_fitted_without_it(n, d):
    features, labels = blobs(n, d, k=4)
    held = (np.arange(n) % 5 == 2) | (labels == 3)  # class 3: none among the others
    density = ood.fit_density(features[~held], labels[~held], 4)
    assert ood._held_out_score(features, labels, 4, held) == pytest.approx(
        density.score(features[held]), rel=1e-9)


def test_a_class_without_images_is_no_mean_to_be_near():
    features, labels = blobs(100)
    density = ood.fit_density(features, labels, 5)  # classes 3 and 4 have no image
    assert np.isnan(density.means[3:]).all()
    assert np.isfinite(density.score(features)).all()


def test_energy_is_logsumexp():
    logits = np.random.default_rng(0).normal(0, 30, (50, 7))
    assert ood.energy_score(logits) == pytest.approx(logsumexp(logits, axis=1))


def test_detection_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    familiar = np.round(rng.normal(1, 1, 300), 1)  # rounded: ties between the groups
    unfamiliar = np.round(rng.normal(0, 1, 200), 1)
    found = ood.detection_metrics(familiar, unfamiliar)
    truth = np.r_[np.ones(300), np.zeros(200)]
    assert found["auroc"] == pytest.approx(roc_auc_score(truth, np.r_[familiar, unfamiliar]))
    cut = np.quantile(familiar, 0.05)  # 95 % of the familiar images lie above it
    assert found["fpr_at_95_tpr"] == pytest.approx((unfamiliar >= cut).mean())


def test_the_threshold_keeps_95_percent_of_fresh_images_and_flags_shifted_ones():
    kept = []
    for seed in range(20):
        features, labels = blobs(400, seed=seed)
        fam = ood.fit_familiarity(np.zeros(400), features, labels, 3, seed=seed)
        fresh, _ = blobs(2000, seed=1000 + seed)
        kept.append(1 - fam.unfamiliar(fam.score(None, fresh)).mean())
        shifted, _ = blobs(500, seed=2000 + seed, shift=2.0)
        assert fam.unfamiliar(fam.score(None, shifted)).mean() > 0.9
    # 400 validation images put the 5 % quantile within about a point of its truth
    assert 0.93 < np.mean(kept) < 0.97 and min(kept) > 0.9


def test_round_trip_and_damaged_arrays():
    features, labels = blobs(100)
    fam = ood.fit_familiarity(np.zeros(100), features, labels, 3)
    again = ood.Familiarity.from_arrays(fam.to_arrays())
    assert again.method == "mahalanobis" and again.threshold == fam.threshold
    assert again.score(None, features) == pytest.approx(fam.score(None, features), rel=1e-5)
    energy = ood.fit_familiarity(np.arange(100.0), None, labels, 3)
    assert energy.method == "energy" and energy.threshold == pytest.approx(np.quantile(
        np.arange(100.0), 0.05))
    with pytest.raises(ValueError, match="do not fit"):
        ood.Familiarity.from_arrays({**fam.to_arrays(), "density_directions": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="unknown"):
        ood.Familiarity.from_arrays({**fam.to_arrays(), "method": "msp"})


def test_a_detector_saved_by_olsdesk_0_3_scores_as_it_did():
    """0.3 kept the top eigen-directions of the covariance with their variances and one
    variance for every other direction; its score, written out here, is what it gave."""
    features, labels = blobs(300, d=20)
    queries, _ = blobs(40, d=20, seed=3, shift=0.5)
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    cov, _ = ledoit_wolf(features - means[labels], assume_centered=True)
    values, vectors = np.linalg.eigh(cov)
    basis, variances = vectors[:, -8:], values[-8:]  # 8 of 20 kept
    rest = values[:-8].mean()
    diffs = queries[:, None, :] - means[None]  # N x K x D
    inside = diffs @ basis
    then = ((inside ** 2) / variances).sum(-1) + ((diffs ** 2).sum(-1)
                                                  - (inside ** 2).sum(-1)) / rest
    saved = {"method": "mahalanobis", "threshold": -30.0, "keep": 0.95,
             "density_means": means.astype(np.float32),
             "density_basis": basis.astype(np.float32),
             "density_variances": variances, "density_rest": rest}
    fam = ood.Familiarity.from_arrays(saved)
    assert -fam.score(None, queries) == pytest.approx(then.min(axis=1), rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        ood.Familiarity.from_arrays({**saved, "density_rest": 0.0})


def test_the_blockwise_triangular_solve_is_scipys():
    from scipy.linalg import solve_triangular

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 300))
    lower = np.linalg.cholesky(a @ a.T + 300 * np.eye(300))
    for columns in (7, 400):  # fewer columns than a block's rows, and more (its inverse)
        b = rng.normal(size=(300, columns))
        for block in (1, 64, 256, 300, 1000):  # ending mid-block, one block, none left
            assert ood._solve_lower(lower, b, block) == pytest.approx(
                solve_triangular(lower, b, lower=True), rel=1e-10, abs=1e-12)


def test_one_image_a_class_is_no_covariance_and_falls_back_to_energy():
    features, _ = blobs(12, k=12)
    fam = ood.fit_familiarity(np.arange(12.0), features, np.arange(12), 12)
    assert fam.method == "energy" and fam.density is None
