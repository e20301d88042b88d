"""Selective prediction: AURC, E-AURC, the risk-coverage curve, against the definitions
computed by hand and by brute force over every order of tied scores."""

import itertools

import numpy as np
import pytest

from olsdesk.core.bootstrap import Selective, metric_samples, resample_block


def brute_aurc(score, correct):
    """The plain definition (mean over k of the error rate of the k most confident),
    averaged over every order of the images whose scores tie."""
    groups = {}
    for i, s in enumerate(score):
        groups.setdefault(s, []).append(i)
    values = []
    for orders in itertools.product(*(list(itertools.permutations(groups[s]))
                                      for s in sorted(groups, reverse=True))):
        order = [i for group in orders for i in group]
        errors = 1 - np.asarray(correct)[order]
        values.append(np.mean(np.cumsum(errors) / np.arange(1, len(order) + 1)))
    return float(np.mean(values))


def test_a_case_computed_by_hand():
    s = Selective(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    aurc, eaurc = s.aurc(np.ones((4, 1)))
    # risks 0, 1/2, 1/3, 2/4; the best order (both correct first) 0, 0, 1/3, 2/4
    assert aurc[0] == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    assert eaurc[0] == pytest.approx((1 / 2 + 1 / 3 + 2 / 4) / 4 - (1 / 3 + 2 / 4) / 4)
    coverage, risk = s.curve()
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 1 / 2])
    assert s.accuracy_at(0.75) == pytest.approx(2 / 3)
    assert s.referral_for(2 / 3) == pytest.approx(0.25)  # answer 3 of 4: 2/3 right
    assert s.referral_for(1.0) == pytest.approx(0.75)  # only the most confident
    assert Selective(np.array([0.9, 0.1]), np.array([0, 1])).referral_for(1.0) is None


def test_ties_are_every_order_alike_and_weights_are_repeated_images():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        # many ties, or none (two ways through the code)
        score = rng.integers(0, 3, n) / 2.0 if rng.random() < 0.5 else rng.permutation(n) / n
        correct = rng.integers(0, 2, n)
        s = Selective(score, correct)
        aurc, eaurc = s.aurc(np.ones((n, 1)))
        assert aurc[0] == pytest.approx(brute_aurc(score, correct), abs=1e-12)
        best = brute_aurc(np.asarray(correct, float) + np.arange(n) * 1e-9, correct)
        assert eaurc[0] == pytest.approx(aurc[0] - best, abs=1e-9)
        # a bootstrap resample: image i repeated w_i times (the weights sum to n)
        w = resample_block(n, 3, int(rng.integers(0, 100)), 0)
        values, _ = s.aurc(w)
        for col in range(w.shape[1]):
            repeat = np.repeat(np.arange(n), w[:, col].astype(int))
            assert values[col] == pytest.approx(brute_aurc(score[repeat], correct[repeat]),
                                                abs=1e-9)


def test_the_bootstrap_reports_aurc_of_the_top_class_probability():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(300, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 5, 300)
    result = metric_samples(probs, labels, resamples=200)
    s = Selective(probs.max(1), probs.argmax(1) == labels)
    aurc, eaurc = (v[0] for v in s.aurc(np.ones((300, 1))))
    assert result.value["aurc"] == pytest.approx(aurc)
    assert result.value["eaurc"] == pytest.approx(eaurc)
    lo, hi = result.interval("aurc")
    assert lo < aurc < hi and result.summary["aurc"].shape == (200,)
    assert 0 <= result.value["eaurc"] <= result.value["aurc"]
