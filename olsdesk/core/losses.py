"""Training objectives: hard labels, label smoothing, teacher-free KD, online label smoothing,
and the two baselines calibration work compares against: focal loss and margin-based label
smoothing.

Every loss here is an ``nn.Module`` called as ``loss(logits, targets)`` and exposes
``soft_labels``: the K x K matrix of targets it trains against (row = true class), so
that the soft-label view can show CE, LS and TF-KD as well as OLS. ``next_epoch()`` is
called by the trainer at every epoch end; only OLS does something with it.
docs/ALGORITHMS.md states every formula in words.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from olsdesk.config import LOSS_NAMES, loss_alpha


class SoftTargetLoss(nn.Module):
    """Base class: holds the K x K target matrix as a buffer. A loss states its value for
    each image (``per_image``); the batch's loss is their mean or, with class weights
    (``set_class_weights``), their weighted mean ``sum w_y l / sum w_y`` (PyTorch's
    weighted cross-entropy convention)."""

    soft_labels: torch.Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("a classifier needs at least two classes")
        self.num_classes = num_classes
        # not in the state dict: derived from the training split, set by the trainer
        self.register_buffer("class_weights", None, persistent=False)

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        """Weight each image's loss by its class's weight (None: every image alike)."""
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float32)
            if weights.shape != (self.num_classes,) or bool((weights < 0).any()):
                raise ValueError("class weights: one non-negative number a class")
            weights = weights.to(self.soft_labels.device)
        self.class_weights = weights

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = self.per_image(logits, targets)
        if self.class_weights is None:
            return values.mean()
        w = self.class_weights[targets]
        return (w * values).sum() / w.sum().clamp(min=1e-12)

    def next_epoch(self) -> None:
        """Called once at every epoch end. Fixed-target losses do nothing."""


class HardLabelLoss(SoftTargetLoss):
    """Plain cross-entropy against one-hot labels."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.register_buffer("soft_labels", torch.eye(num_classes))

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, reduction="none")


class LabelSmoothingLoss(SoftTargetLoss):
    """Cross-entropy against ``(1 - eps) * onehot + eps / K`` (PyTorch's convention)."""

    def __init__(self, num_classes: int, epsilon: float = 0.1) -> None:
        super().__init__(num_classes)
        if not 0.0 <= epsilon < 1.0:
            raise ValueError("label smoothing epsilon must be in [0, 1)")
        self.epsilon = epsilon
        matrix = (1.0 - epsilon) * torch.eye(num_classes) + epsilon / num_classes
        self.register_buffer("soft_labels", matrix)

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.epsilon,
                               reduction="none")


class TeacherFreeKDLoss(SoftTargetLoss):
    """Teacher-free KD, regularisation form (Yuan et al., CVPR 2020), as its official code.

    The virtual teacher puts ``a`` on the true class and ``(1 - a) / (K - 1)`` elsewhere;
    those *probabilities* are divided by T and passed through a softmax. The loss is
    ``(1 - alpha) * CE + alpha * multiplier * KLDiv(mean over N*K)``.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.95,
        temperature: float = 6.0,
        correct_prob: float = 0.99,
        multiplier: float = 1.0,
    ) -> None:
        super().__init__(num_classes)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("TF-KD alpha must be in [0, 1]")
        if temperature <= 0:
            raise ValueError("TF-KD temperature must be positive")
        if not 0.0 < correct_prob < 1.0:
            raise ValueError("the virtual teacher's correct-class probability must be in (0, 1)")
        self.alpha = alpha
        self.temperature = temperature
        self.correct_prob = correct_prob
        self.multiplier = multiplier
        off = (1.0 - correct_prob) / (num_classes - 1)
        teacher = torch.full((num_classes, num_classes), off)
        teacher.fill_diagonal_(correct_prob)
        self.register_buffer("soft_labels", torch.softmax(teacher / temperature, dim=1))

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits.float(), dim=1)
        ce = F.nll_loss(log_probs, targets, reduction="none")
        teacher = self.soft_labels[targets]
        # KLDivLoss with 'mean' reduction, as the official code: the sum divided by N*K,
        # so an image's share is its sum over the classes divided by K
        kl = (teacher * (teacher.log() - log_probs)).sum(dim=1) / self.num_classes
        return (1.0 - self.alpha) * ce + self.alpha * self.multiplier * kl


class OnlineLabelSmoothing(SoftTargetLoss):
    """Online label smoothing (Zhang et al., IEEE TIP 2021).

    ``soft_labels`` (row = true class) is the matrix in use this epoch. In training mode
    every call adds the softmax of each *correctly* classified sample to row ``y`` of
    ``soft_label_sum`` and counts it; ``next_epoch()`` turns the sums into the next
    matrix (a class with fewer than ``min_correct`` correct predictions gets the uniform
    row) and resets them; ``row_counts`` keeps how many built each row.
    """

    def __init__(self, num_classes: int, alpha: float = 0.5, init: str = "uniform",
                 min_correct: int = 1) -> None:
        super().__init__(num_classes)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("OLS alpha must be in [0, 1]")
        if init not in ("uniform", "zeros"):
            raise ValueError("OLS init must be 'uniform' or 'zeros'")
        if min_correct < 1:
            raise ValueError("OLS needs at least one correct prediction to build a row")
        self.alpha = alpha
        self.init = init
        self.min_correct = min_correct
        start = torch.full((num_classes, num_classes), 1.0 / num_classes)
        if init == "zeros":
            start.zero_()
        self.register_buffer("soft_labels", start)
        self.register_buffer("soft_label_sum", torch.zeros(num_classes, num_classes))
        self.register_buffer("correct_count", torch.zeros(num_classes))
        # how many correct predictions built each row of ``soft_labels`` (0: the start
        # matrix, or the uniform row of a class with fewer than ``min_correct``)
        self.register_buffer("row_counts", torch.zeros(num_classes))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before the rows were counted: their counts are unknown (-1)
        state_dict.setdefault(prefix + "row_counts",
                              torch.full((self.num_classes,), -1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits.float(), dim=1)
        ce = F.nll_loss(log_probs, targets, reduction="none")
        soft = -(self.soft_labels[targets] * log_probs).sum(dim=1)
        if self.training:
            self._accumulate(log_probs.detach(), targets)
        return self.alpha * ce + (1.0 - self.alpha) * soft

    @torch.no_grad()
    def _accumulate(self, log_probs: torch.Tensor, targets: torch.Tensor) -> None:
        probs = log_probs.exp()
        correct = (probs.argmax(dim=1) == targets).to(self.soft_label_sum.dtype)
        # Every sample is added, weighted 1 when correct and 0 when not: selecting the
        # correct rows with a mask would make the host wait for the GPU at every step.
        # index_add_ sums repeated labels; fancy-index += would drop all but one.
        self.soft_label_sum.index_add_(
            0, targets, probs.to(self.soft_label_sum.dtype) * correct[:, None])
        self.correct_count.index_add_(0, targets, correct.to(self.correct_count.dtype))

    @torch.no_grad()
    def next_epoch(self) -> None:
        """Swap in the matrix built from this epoch's correct predictions; reset the sums.

        Under ``torch.distributed`` each process saw only its shard: the sums are added
        over all processes first, so every process swaps in the same matrix, the one a
        single process would build from the union of their samples.
        """
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.soft_label_sum)
            dist.all_reduce(self.correct_count)
        seen = self.correct_count >= self.min_correct
        uniform = torch.full_like(self.soft_labels, 1.0 / self.num_classes)
        averaged = self.soft_label_sum / self.correct_count.clamp(min=1).unsqueeze(1)
        self.soft_labels.copy_(torch.where(seen.unsqueeze(1), averaged, uniform))
        self.row_counts.copy_(self.correct_count)
        self.soft_label_sum.zero_()
        self.correct_count.zero_()


FLSD_THRESHOLD = 0.2  # FLSD-53: gamma 5 below this true-class probability, 3 above
FLSD_GAMMAS = (5.0, 3.0)


class FocalLoss(SoftTargetLoss):
    """Focal loss (Lin et al., ICCV 2017), as calibration work trains with it (Mukhoti et
    al., NeurIPS 2020): ``-(1 - p_y)^gamma * log p_y``, averaged over the batch. It
    trains against one-hot labels (the soft-label view shows the identity). ``gamma``
    None is FLSD-53, Mukhoti et al.'s sample-dependent schedule: gamma 5 for an image
    whose true-class probability is below 0.2, 3 otherwise (the choice is a constant of
    the step: no gradient flows through it)."""

    def __init__(self, num_classes: int, gamma: float | None = None) -> None:
        super().__init__(num_classes)
        if gamma is not None and gamma < 0:
            raise ValueError("the focal loss's gamma must be at least 0")
        self.gamma = gamma
        self.register_buffer("soft_labels", torch.eye(num_classes))

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        p = log_p.exp()
        if self.gamma is None:
            low, high = FLSD_GAMMAS
            gamma = torch.where(p.detach() < FLSD_THRESHOLD, low, high)
        else:
            gamma = self.gamma
        return -((1.0 - p) ** gamma * log_p)


class MarginLabelSmoothing(SoftTargetLoss):
    """Margin-based label smoothing, MbLS (Liu et al., CVPR 2022), as its official code:
    ``CE + lam * mean over N x K of max(0, max_j z_j - z_k - margin)``: the logits may
    spread apart by at most ``margin`` before they are pulled together (label smoothing
    pulls every distance towards 0). One-hot targets (the soft-label view shows the
    identity)."""

    def __init__(self, num_classes: int, margin: float = 10.0, lam: float = 0.1) -> None:
        super().__init__(num_classes)
        if margin <= 0:
            raise ValueError("the MbLS margin must be positive")
        if lam < 0:
            raise ValueError("the MbLS lambda must be at least 0")
        self.margin = margin
        self.lam = lam
        self.register_buffer("soft_labels", torch.eye(num_classes))

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        distance = z.max(dim=1, keepdim=True).values - z
        return (F.cross_entropy(z, targets, reduction="none")
                + self.lam * F.relu(distance - self.margin).mean(dim=1))


def build_loss(
    name: str,
    num_classes: int,
    *,
    alpha: float | None = None,
    epsilon: float = 0.1,
    temperature: float = 6.0,
    ols_init: str = "uniform",
    ols_min_correct: int = 1,
    focal_gamma: float | None = None,
    mbls_margin: float = 10.0,
    mbls_lambda: float = 0.1,
) -> SoftTargetLoss:
    """The loss called ``name`` (one of LOSS_NAMES); ``alpha`` defaults per loss."""
    if name == "ce":
        return HardLabelLoss(num_classes)
    if name == "ls":
        return LabelSmoothingLoss(num_classes, epsilon)
    if name == "tfkd":
        return TeacherFreeKDLoss(num_classes, loss_alpha(name, alpha), temperature)
    if name == "ols":
        return OnlineLabelSmoothing(num_classes, loss_alpha(name, alpha), ols_init,
                                    ols_min_correct)
    if name == "focal":
        return FocalLoss(num_classes, focal_gamma)
    if name == "mbls":
        return MarginLabelSmoothing(num_classes, mbls_margin, mbls_lambda)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
