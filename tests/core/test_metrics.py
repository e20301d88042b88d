"""Metrics against the published test vector, hand-computed values and torchmetrics."""

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from olsdesk.core import metrics as m

PUBLISHED_PROBS = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
PUBLISHED_LABELS = np.array([0, 1, 2, 0])


def test_published_calibration_vector():
    assert m.expected_calibration_error(PUBLISHED_PROBS, PUBLISHED_LABELS, 3) == pytest.approx(0.2000, abs=1e-4)
    assert m.rms_calibration_error(PUBLISHED_PROBS, PUBLISHED_LABELS, 3) == pytest.approx(0.2082, abs=1e-4)
    assert m.maximum_calibration_error(PUBLISHED_PROBS, PUBLISHED_LABELS, 3) == pytest.approx(0.2333, abs=1e-4)


def test_brier_published_value():
    assert m.brier_score(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1])) == pytest.approx(0.13)


def test_nll_and_topk_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    labels = np.array([1, 2])
    assert m.negative_log_likelihood(probs, labels) == pytest.approx(-(np.log(0.3) + np.log(0.7)) / 2)
    assert m.topk_accuracy(probs, labels, 1) == 0.5
    assert m.topk_accuracy(probs, labels, 2) == 1.0
    assert m.topk_accuracy(probs, labels, 10) == 1.0  # k larger than K is clamped


def test_reliability_bins_by_hand():
    bins = m.reliability_bins(PUBLISHED_PROBS, PUBLISHED_LABELS, 3)
    # confidences .55 .55 .60 .90 -> bins 1, 1, 1, 2; hits 0 0 1 1
    assert bins.counts.tolist() == [0, 3, 1]
    assert np.isnan(bins.accuracy[0])
    assert bins.accuracy[1] == pytest.approx(1 / 3)
    assert bins.confidence[1] == pytest.approx((0.55 + 0.55 + 0.60) / 3)
    assert bins.confidence[2] == pytest.approx(0.9)


def test_bin_edges_follow_lower_exclusive_upper_inclusive():
    # confidence exactly 1/3 belongs to the first of 3 bins, 0.5 to the second
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.25, 0.25]])
    bins = m.reliability_bins(probs, np.array([0, 0]), 3)
    assert bins.counts.tolist() == [1, 1, 0]


def test_adaptive_ece_by_hand():
    # 4 samples, 2 equal-count bins: {.55 (miss), .55 (miss)} and {.60 (hit), .90 (hit)}
    ace = m.adaptive_calibration_error(PUBLISHED_PROBS, PUBLISHED_LABELS, 2)
    assert ace == pytest.approx(0.5 * 0.55 + 0.5 * abs(1 - 0.75))


def test_classwise_ece_by_hand():
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    labels = np.array([0, 1])
    # 2 bins. class 0: p=.3 (not class 0) in bin 1, gap .3; p=.8 (class 0) in bin 2, gap .2
    #         class 1: p=.2 (not class 1) in bin 1, gap .2; p=.7 (class 1) in bin 2, gap .3
    # each class: (.3 + .2) / 2 = .25; the mean over classes is .25
    assert m.classwise_calibration_error(probs, labels, 2) == pytest.approx(0.25)


@pytest.mark.parametrize("rows", [2048, 7])
def test_classwise_ece_is_each_class_columns_ece_exactly(monkeypatch, rows):
    """Binned a block of rows at a time (one block and many), only the values beyond the
    first bin binned, it is the mean of each class's own ECE (its column against
    [y = k]) bit for bit, with a class that has no images and probabilities on the bins'
    edges."""
    monkeypatch.setattr(m, "_BLOCK_ROWS", rows)
    rng = np.random.default_rng(5)
    classes = 40  # more than one pass's classes: 16, 16 and 8
    probs = rng.dirichlet(np.full(classes, 0.4), size=3000)
    probs[:40] = np.eye(classes)[rng.integers(0, classes, 40)]  # 0 and 1 exactly
    probs[40:60, 14:19] = [[2 / 15, 1 / 15, 12 / 15, 0.0, 1 / 15]]  # on the bins' edges
    labels = rng.choice(np.delete(np.arange(classes), 17), size=3000)  # 17: no image
    for n_bins in (15, 4, 1):
        each = [m.ece_of_confidence(probs[:, k], labels == k, n_bins) for k in range(classes)]
        assert m.classwise_calibration_error(probs, labels, n_bins) == float(np.mean(each))


def _random_probs(rng, n, k, sharp=3.0):
    logits = rng.normal(size=(n, k)) * sharp
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.where(rng.random(n) < 0.6, probs.argmax(axis=1), rng.integers(0, k, n))
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_torchmetrics_on_random_data(seed):
    rng = np.random.default_rng(seed)
    probs, labels = _random_probs(rng, 500, 7)
    tp, tl = torch.tensor(probs, dtype=torch.float64), torch.tensor(labels)
    for norm, ours in (("l1", m.expected_calibration_error), ("max", m.maximum_calibration_error),
                       ("l2", m.rms_calibration_error)):
        ref = MulticlassCalibrationError(num_classes=7, n_bins=15, norm=norm)(tp, tl).item()
        assert ours(probs, labels, 15) == pytest.approx(ref, abs=1e-5), norm
    for k in (1, 5):
        ref = MulticlassAccuracy(num_classes=7, top_k=k, average="micro")(tp, tl).item()
        assert m.topk_accuracy(probs, labels, k) == pytest.approx(ref, abs=1e-6)


def test_topk_ranks_ties_by_class_index_as_argmax_does():
    """Equal probabilities rank the lower class first, as a stable descending sort."""
    probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.25, 0.25, 0.5]])
    labels = np.array([0, 1, 2, 1])
    # ranks by hand: 1, 2, 2, 3
    assert m.topk_accuracy(probs, labels, 1) == 0.25
    assert m.topk_accuracy(probs, labels, 2) == 0.75
    assert m.topk_accuracy(probs, labels, 3) == 1.0
    stable = np.argsort(-probs, axis=1, kind="stable")
    for k in (1, 2):
        assert m.topk_accuracy(probs, labels, k) == np.mean(
            (stable[:, :k] == labels[:, None]).any(axis=1))


def test_brier_and_nll_against_independent_formulas():
    rng = np.random.default_rng(3)
    probs, labels = _random_probs(rng, 200, 5)
    onehot = np.eye(5)[labels]
    assert m.brier_score(probs, labels) == pytest.approx(((probs - onehot) ** 2).sum(1).mean())
    nll = torch.nn.functional.nll_loss(torch.log(torch.tensor(probs)), torch.tensor(labels)).item()
    assert m.negative_log_likelihood(probs, labels) == pytest.approx(nll)


def test_confidence_histogram_counts_every_sample():
    rng = np.random.default_rng(4)
    probs, _ = _random_probs(rng, 300, 4)
    hist = m.confidence_histogram(probs, 15)
    assert hist.sum() == 300 and hist.shape == (15,)


def test_mean_prediction_matrix():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    mat = m.mean_prediction_matrix(probs, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(mat, [[0.7, 0.3], [0.1, 0.9]])
    # many blocks of rows, classes running across them, one class without images
    rng = np.random.default_rng(9)
    probs, labels = _random_probs(rng, 30_000, 6)
    labels[labels == 4] = 5
    mat = m.mean_prediction_matrix(probs, labels, 6)
    for c in (0, 1, 2, 3, 5):
        np.testing.assert_allclose(mat[c], probs[labels == c].mean(axis=0), rtol=1e-12)
    assert np.isnan(mat[4]).all()


def test_embedding_separation():
    feats = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    sep = m.embedding_separation(feats, labels)
    # intra: both pairs at distance 1; inter: 10, 10, sqrt(101), sqrt(101)
    assert sep.intra_inter_ratio == pytest.approx(1.0 / ((20 + 2 * np.sqrt(101)) / 4))
    assert sep.silhouette == pytest.approx(silhouette_score(feats, labels))
    assert sep.silhouette > 0.8


@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_against_scikit_learn_on_random_clusters(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 300)
    labels[:2] = [5, 6]  # two singleton classes: scored 0, as scikit-learn does
    feats = rng.normal(size=(300, 16)) + labels[:, None] * 0.7
    sep = m.embedding_separation(feats, labels)
    assert sep.silhouette == pytest.approx(silhouette_score(feats, labels), abs=1e-9)
    centred = feats - feats.mean(axis=0)  # the epoch end's shared Gram matrix
    shared = m.embedding_separation(feats, labels, centred @ centred.T)
    assert shared.silhouette == pytest.approx(silhouette_score(feats, labels), abs=1e-9)
    assert shared.intra_inter_ratio == pytest.approx(sep.intra_inter_ratio, rel=1e-9)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        m.expected_calibration_error(np.ones((3, 2)) / 2, np.array([0, 1]))


def test_top_confusions_against_a_hand_computed_matrix():
    # rows true, columns predicted; 3 + 1 + 2 + 2 + 4 = 12 errors
    counts = np.array([[10, 3, 1],
                       [2, 20, 0],
                       [4, 2, 6]])
    found = m.top_confusions(counts)
    assert [(c.true, c.predicted, c.count) for c in found] == [
        (2, 0, 4), (0, 1, 3),
        # two cells of 2: class 2's 2 of its 12 images ranks above class 1's 2 of 22
        (2, 1, 2), (1, 0, 2), (0, 2, 1)]
    assert found[0].share_of_true == pytest.approx(4 / 12)
    assert found[0].share_of_errors == pytest.approx(4 / 12)
    assert found[1].share_of_true == pytest.approx(3 / 14)
    assert found[3].share_of_true == pytest.approx(2 / 22)
    assert sum(c.share_of_errors for c in found) == pytest.approx(1.0)
    assert [(c.true, c.predicted) for c in m.top_confusions(counts, limit=2)] == [(2, 0), (0, 1)]


def test_top_confusions_ties_fall_back_to_the_class_order_and_no_errors_give_none():
    counts = np.array([[5, 1, 1], [1, 5, 1], [1, 1, 5]])
    assert [(c.true, c.predicted) for c in m.top_confusions(counts)] == [
        (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert m.top_confusions(np.diag([3, 4, 5])) == []
    assert m.top_confusions(np.zeros((2, 2), dtype=int)) == []
