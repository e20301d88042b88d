"""Losses against hand-computed values (the formulas of docs/ALGORITHMS.md)."""

import math

import numpy as np
import pytest
import torch

from olsdesk.config import loss_alpha
from olsdesk.core.losses import (
    FocalLoss,
    HardLabelLoss,
    LabelSmoothingLoss,
    MarginLabelSmoothing,
    OnlineLabelSmoothing,
    TeacherFreeKDLoss,
    build_loss,
)


def logits_for(probs):
    """Logits whose softmax is exactly ``probs``."""
    return torch.log(torch.tensor(probs, dtype=torch.float32))


def test_ols_loss_value_for_a_known_matrix():
    ols = OnlineLabelSmoothing(3, alpha=0.5)
    ols.soft_labels.copy_(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]))
    # logits [2, 0, 0]: log Z = log(e^2 + 2) = 2.239554; log p = [-0.239554, -2.239554, -2.239554]
    # CE = 0.239554; soft = 0.6*0.239554 + 0.3*2.239554 + 0.1*2.239554 = 1.039554
    loss = ols.eval()(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.5 * 0.239554 + 0.5 * 1.039554, abs=1e-5)


def test_ols_alpha_weights_the_two_terms():
    ols = OnlineLabelSmoothing(3, alpha=0.2).eval()
    ols.soft_labels.copy_(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]))
    loss = ols(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.2 * 0.239554 + 0.8 * 1.039554, abs=1e-5)


def test_ols_accumulates_repeated_labels_and_only_correct_samples():
    ols = OnlineLabelSmoothing(3).train()
    probs = [
        [0.1, 0.7, 0.2],  # label 1, correct
        [0.2, 0.6, 0.2],  # label 1 again, correct: both must count
        [0.8, 0.1, 0.1],  # label 0, correct
        [0.5, 0.3, 0.2],  # label 2, wrong: must not count
    ]
    ols(logits_for(probs), torch.tensor([1, 1, 0, 2]))
    assert ols.correct_count.tolist() == [1.0, 2.0, 0.0]
    np.testing.assert_allclose(ols.soft_label_sum[1].numpy(), [0.3, 1.3, 0.4], atol=1e-6)
    ols.next_epoch()
    expected = np.array([[0.8, 0.1, 0.1], [0.15, 0.65, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(ols.soft_labels.numpy(), expected, atol=1e-6)
    # The accumulators start again from nothing: only the previous epoch counts.
    assert ols.correct_count.sum().item() == 0
    assert ols.soft_label_sum.abs().sum().item() == 0


def test_ols_class_never_correct_gets_uniform_row_and_rows_sum_to_one():
    ols = OnlineLabelSmoothing(4).train()
    ols(logits_for([[0.7, 0.1, 0.1, 0.1]]), torch.tensor([0]))
    ols.next_epoch()
    s = ols.soft_labels.numpy()
    np.testing.assert_allclose(s[1:], 0.25)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-6)


def test_ols_only_previous_epoch_counts():
    ols = OnlineLabelSmoothing(2).train()
    ols(logits_for([[0.9, 0.1]]), torch.tensor([0]))
    ols.next_epoch()
    ols(logits_for([[0.6, 0.4]]), torch.tensor([0]))
    ols.next_epoch()
    np.testing.assert_allclose(ols.soft_labels[0].numpy(), [0.6, 0.4], atol=1e-6)


def test_ols_eval_mode_does_not_accumulate():
    ols = OnlineLabelSmoothing(3).eval()
    ols(logits_for([[0.8, 0.1, 0.1]]), torch.tensor([0]))
    assert ols.correct_count.sum().item() == 0
    assert ols.soft_label_sum.abs().sum().item() == 0


def test_ols_matrix_is_constant_no_gradient_flows_into_it():
    ols = OnlineLabelSmoothing(3).train()
    logits = torch.randn(5, 3, requires_grad=True)
    ols(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert logits.grad is not None
    assert not ols.soft_labels.requires_grad


def test_ols_zeros_init_makes_first_epoch_alpha_ce():
    ols = OnlineLabelSmoothing(3, alpha=0.5, init="zeros").eval()
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    assert ols(logits, torch.tensor([0])).item() == pytest.approx(0.5 * 0.239554, abs=1e-5)


def test_ols_state_dict_round_trips_matrix_and_accumulators():
    ols = OnlineLabelSmoothing(3).train()
    ols(logits_for([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]), torch.tensor([0, 1]))
    ols.next_epoch()
    ols(logits_for([[0.1, 0.2, 0.7]]), torch.tensor([2]))
    other = OnlineLabelSmoothing(3)
    other.load_state_dict(ols.state_dict())
    for name in ("soft_labels", "soft_label_sum", "correct_count"):
        assert torch.equal(getattr(other, name), getattr(ols, name))


def test_ols_accepts_half_precision_logits():
    ols = OnlineLabelSmoothing(3).train()
    loss = ols(torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float16), torch.tensor([0]))
    assert loss.dtype == torch.float32
    assert ols.correct_count[0].item() == 1


def test_hard_label_loss_is_cross_entropy():
    # CE for logits [2, 0, 0], label 0 = 0.239554 (see above)
    loss = HardLabelLoss(3)(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.239554, abs=1e-5)


def test_label_smoothing_value():
    # target (1 - 0.1) * onehot + 0.1/3 = [0.9333, 0.0333, 0.0333]
    # loss = 0.9333*0.239554 + 2 * 0.0333*2.239554 = 0.223584 + 0.149304
    loss = LabelSmoothingLoss(3, 0.1)(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.223584 + 0.149304, abs=1e-5)


def test_tfkd_value_against_the_formula():
    k, a, t, alpha = 3, 0.99, 6.0, 0.95
    loss_fn = TeacherFreeKDLoss(k, alpha=alpha, temperature=t, correct_prob=a)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    targets = torch.tensor([0, 2])
    # teacher probabilities divided by T, then softmax (as the official code does)
    q = np.full((k, k), (1 - a) / (k - 1))
    np.fill_diagonal(q, a)
    soft = np.exp(q / t) / np.exp(q / t).sum(axis=1, keepdims=True)
    logp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(axis=1, keepdims=True))
    y = targets.numpy()
    ce = -logp[np.arange(2), y].mean()
    kl = (soft[y] * (np.log(soft[y]) - logp)).sum() / (2 * k)  # KLDivLoss 'mean': N*K
    expected = (1 - alpha) * ce + alpha * kl
    assert loss_fn(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_by_hand_and_its_flsd53_schedule():
    # logits (2, 0, 0), class 0: p = e^2 / (e^2 + 2); gamma 2: (1 - p)^2 * -log p
    z = torch.tensor([[2.0, 0.0, 0.0]])
    p = math.exp(2) / (math.exp(2) + 2)
    assert FocalLoss(3, 2.0)(z, torch.tensor([0])).item() == pytest.approx(
        (1 - p) ** 2 * -math.log(p), rel=1e-6)
    # gamma 0 is cross-entropy
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert FocalLoss(5, 0.0)(logits, y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    # FLSD-53: class 1 of the same logits has q = 1 / (e^2 + 2) < 0.2 -> gamma 5;
    # class 0 (p = 0.787) -> gamma 3; the batch mean of the two
    q = 1 / (math.exp(2) + 2)
    both = FocalLoss(3)(z.repeat(2, 1), torch.tensor([0, 1])).item()
    assert both == pytest.approx(((1 - p) ** 3 * -math.log(p) + (1 - q) ** 5 * -math.log(q))
                                 / 2, rel=1e-6)
    np.testing.assert_array_equal(FocalLoss(3).soft_labels.numpy(), np.eye(3))
    with pytest.raises(ValueError):
        FocalLoss(3, -1.0)


def test_margin_based_label_smoothing_by_hand():
    # logits (5, 0, -8): distances to the largest (0, 5, 13); margin 10 leaves (0, 0, 3),
    # mean over the 3 logits 1.0; lam 0.1 -> CE + 0.1
    z = torch.tensor([[5.0, 0.0, -8.0]])
    ce = math.log(1 + math.exp(-5) + math.exp(-13))
    loss = MarginLabelSmoothing(3, margin=10.0, lam=0.1)
    assert loss(z, torch.tensor([0])).item() == pytest.approx(ce + 0.1, rel=1e-6)
    # inside the margin it is cross-entropy
    assert MarginLabelSmoothing(3, margin=20.0)(z, torch.tensor([1])).item() == pytest.approx(
        torch.nn.functional.cross_entropy(z, torch.tensor([1])).item(), rel=1e-6)
    built = build_loss("mbls", 3, mbls_margin=6.0, mbls_lambda=0.5)
    assert (built.margin, built.lam) == (6.0, 0.5)
    assert build_loss("focal", 3, focal_gamma=1.5).gamma == 1.5
    with pytest.raises(ValueError):
        MarginLabelSmoothing(3, margin=0.0)


def test_fixed_target_matrices():
    np.testing.assert_allclose(HardLabelLoss(3).soft_labels.numpy(), np.eye(3))
    ls = LabelSmoothingLoss(4, 0.2).soft_labels.numpy()
    assert ls[0, 0] == pytest.approx(0.85) and ls[0, 1] == pytest.approx(0.05)
    tf = TeacherFreeKDLoss(3).soft_labels.numpy()
    np.testing.assert_allclose(tf.sum(axis=1), 1.0, rtol=1e-6)
    assert tf[0, 0] > tf[0, 1]


def test_build_loss_defaults_and_errors():
    assert build_loss("ols", 5).alpha == loss_alpha("ols", None) == 0.5
    assert build_loss("tfkd", 5).alpha == loss_alpha("tfkd", None) == 0.95
    assert build_loss("ols", 5, alpha=0.0).alpha == loss_alpha("ols", 0.0) == 0.0  # a value
    assert loss_alpha("ce", 0.3) is None and loss_alpha("ls", None) is None  # no α there
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("poly", 5)
    with pytest.raises(ValueError):
        OnlineLabelSmoothing(3, init="random")
    assert math.isclose(build_loss("ls", 4, epsilon=0.2).epsilon, 0.2)


def _ols_rank(rank: int, world: int, init: str, logits, targets, out: str) -> None:
    """One process of a gloo group: accumulate its shard, then swap in the matrix."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ols = OnlineLabelSmoothing(logits.shape[1])
        ols(logits[rank::world], targets[rank::world])
        ols.next_epoch()
        torch.save(ols.soft_labels.clone(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ols_sums_its_accumulators_over_processes(tmp_path):
    """Two gloo processes, each with half the samples, build the matrix one process
    builds from all of them (and both hold the same one)."""
    import torch.multiprocessing as mp

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=generator) * 3
    targets = torch.where(torch.rand(64, generator=generator) < 0.7, logits.argmax(1),
                          torch.randint(0, 5, (64,), generator=generator))
    single = OnlineLabelSmoothing(5)
    single(logits, targets)
    single.next_epoch()
    out = str(tmp_path / "soft_labels")
    mp.spawn(_ols_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", logits, targets, out),
             nprocs=2, join=True)
    for rank in (0, 1):
        torch.testing.assert_close(torch.load(f"{out}.{rank}"), single.soft_labels)



def test_class_weights_are_pytorchs_weighted_cross_entropy():
    """Weighted, every loss is sum w_y l / sum w_y: for hard labels exactly PyTorch's
    cross-entropy with ``weight``; inverse frequency is scikit-learn's 'balanced'."""
    from sklearn.utils.class_weight import compute_class_weight

    from olsdesk.core.data.loader import inverse_frequency

    labels = np.array([0] * 12 + [1] * 3 + [2] * 1)
    weights = inverse_frequency(labels, 4)  # class 3 has no image: weight 0
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(weights.numpy()[:3], expected * 3 / 4, rtol=1e-6)
    assert weights[3] == 0
    torch.manual_seed(0)
    logits, targets = torch.randn(16, 4), torch.as_tensor(labels)
    ce = build_loss("ce", 4)
    ce.set_class_weights(weights)
    reference = torch.nn.functional.cross_entropy(logits, targets, weight=weights)
    assert ce(logits, targets).item() == pytest.approx(reference.item(), rel=1e-6)
    # any loss: the weighted mean of its per-image values, by hand
    for name in ("ls", "tfkd", "ols", "focal", "mbls"):
        loss = build_loss(name, 4)
        values = loss.per_image(logits, targets)
        loss.eval()
        assert loss(logits, targets).item() == pytest.approx(values.mean().item(), rel=1e-6)
        loss.set_class_weights(weights)
        w = weights[targets]
        assert loss(logits, targets).item() == pytest.approx(
            ((w * values).sum() / w.sum()).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one non-negative number a class"):
        ce.set_class_weights(torch.ones(3))


def test_ols_builds_no_row_from_fewer_correct_predictions_than_its_minimum():
    """Class 0: three correct predictions, a row of their mean; class 1: one, below the
    minimum of 2, so the uniform row; the counts that built each row are kept."""
    loss = OnlineLabelSmoothing(3, alpha=0.5, min_correct=2)
    logits = torch.tensor([[4.0, 1.0, 0.0], [3.0, 0.0, 1.0], [5.0, 2.0, 2.0],
                           [0.0, 3.0, 1.0], [2.0, 1.0, 0.0]])
    targets = torch.tensor([0, 0, 0, 1, 1])  # the last is wrong: class 1 has one correct
    loss.train()
    loss(logits, targets)
    loss.next_epoch()
    probs = torch.softmax(logits, 1)
    np.testing.assert_allclose(loss.soft_labels[0], probs[:3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(loss.soft_labels[1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(loss.soft_labels[2], [1 / 3] * 3, rtol=1e-6)
    assert loss.row_counts.tolist() == [3.0, 1.0, 0.0]
    # a checkpoint from before rows were counted loads, its counts unknown
    state = {k: v for k, v in loss.state_dict().items() if k != "row_counts"}
    older = OnlineLabelSmoothing(3)
    older.load_state_dict(state)
    assert older.row_counts.tolist() == [-1.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="at least one correct prediction"):
        OnlineLabelSmoothing(3, min_correct=0)
