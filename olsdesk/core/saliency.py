"""Grad-CAM: where in the image the model looked for a class.

For a class c and the last convolutional block's output A (C maps of h x w), the
weights are the gradients of c's logit averaged over each map, and the map is
``relu(sum_k w_k A_k)``, resized to the model's input and scaled to 0-1 per image
(Selvaraju et al., 2017). Computed with the model in eval mode, one backward pass a
batch (in eval mode the images of a batch do not interact, so each image's map is its
own). ``overlay`` blends a map over the grayscale input as RGB for display.

Written here rather than taken from captum: its LayerGradCam is the same few lines,
and captum would bring matplotlib into the bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def cam_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the last spatial feature map of an olsdesk model:
    ResNet's layer4, else the module just before the backbone's global pooling
    (MobileNetV2's and VGG-19's feature stacks, the small CNN's last ReLU)."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "layer4"):
        return backbone.layer4
    children = list(backbone.children())
    for i, child in enumerate(children):
        if isinstance(child, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and i > 0:
            return children[i - 1]
    raise ValueError(f"no convolutional block found in {type(model).__name__}")


def grad_cam(model: nn.Module, inputs: torch.Tensor, classes: Sequence[int],
             layer: nn.Module | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N x H x W, each scaled to 0-1; all zero where no position speaks
    for the class) of ``classes[i]`` for ``inputs[i]``, and the logits (N x K)."""
    layer = layer or cam_layer(model)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(inputs)
            activation = captured[-1]
            chosen = torch.as_tensor(list(classes), device=logits.device)
            score = logits.gather(1, chosen[:, None]).sum()
            grads, = torch.autograd.grad(score, activation)
    finally:
        hook.remove()
        model.train(was_training)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam[:, 0]
    top = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    cam = torch.where(top > 1e-12, cam / top, torch.zeros_like(cam))
    return cam.cpu().numpy(), logits.detach().float().cpu().numpy()


def display_image(tensor: torch.Tensor) -> np.ndarray:
    """A model input (C x H x W, normalised) as a grayscale image in 0-1 for display:
    the mean of its channels stretched to the full range (the picture the model saw)."""
    gray = tensor.detach().float().mean(dim=0).cpu().numpy()
    low, high = float(gray.min()), float(gray.max())
    return (gray - low) / (high - low) if high > low else np.zeros_like(gray)


# a perceptual dark-to-bright scale for the map (inferno's shape: black, purple, orange,
# pale yellow), interpolated between these stops
_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                  dtype=np.float32) / 255.0


def colour_map(values: np.ndarray) -> np.ndarray:
    """0-1 values -> RGB floats (H x W x 3) on the dark-to-bright scale."""
    x = np.clip(values, 0.0, 1.0) * (len(_STOPS) - 1)
    low = np.minimum(np.floor(x).astype(int), len(_STOPS) - 2)
    frac = (x - low)[..., None]
    return _STOPS[low] * (1.0 - frac) + _STOPS[low + 1] * frac


def overlay(image: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """The grayscale ``image`` (H x W, 0-1) with ``cam`` (H x W, 0-1) blended over it, as
    uint8 RGB. The map's weight grows with its value, so what the model ignored keeps
    the image's own pixels."""
    gray = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=2)
    weight = opacity * np.clip(cam, 0.0, 1.0)[..., None] ** 0.5
    rgb = gray * (1.0 - weight) + colour_map(cam) * weight
    return np.ascontiguousarray((rgb * 255.0 + 0.5).astype(np.uint8))


@dataclass(frozen=True)
class Explained:
    """One image as the model saw it, with its Grad-CAM map for ``class_index``."""

    row: int  # the caller's index (a row of an evaluation, say)
    image: np.ndarray  # H x W, 0-1: the model's input
    cam: np.ndarray  # H x W, 0-1
    class_index: int
    error: str | None = None

    def picture(self, opacity: float = 0.45) -> np.ndarray:
        """RGB uint8 with the map over the image (the plain image at opacity 0)."""
        return overlay(self.image, self.cam, opacity)


def iter_explain(predictor, samples, items: Sequence[tuple[int, int, int]],
                 batch_size: int = 16, stop: threading.Event | None = None
                 ) -> Iterator[Explained]:
    """Grad-CAM for ``items`` of (row, sample index, class index), in order, a batch at a
    time; an unreadable image is an ``Explained`` with its sentence in ``error``."""
    from olsdesk.core.data.images import ImageReadError

    model = predictor.model
    layer = cam_layer(model)
    for start in range(0, len(items), batch_size):
        if stop is not None and stop.is_set():
            return
        chunk, tensors, failed = items[start:start + batch_size], [], {}
        for row, index, _ in chunk:
            try:  # the per-file firewall: any failure is this image's sentence
                tensors.append(predictor.preprocessing.prepare(
                    lambda index=index: samples.load(index, predictor.preprocessing),
                    samples.describe(index))[1])
            except ImageReadError as exc:
                failed[row] = str(exc)
        good = [item for item in chunk if item[0] not in failed]
        maps = []
        if good:
            with predictor.lock:
                maps = grad_cam(model, predictor.inputs(tensors),
                                [c for _, _, c in good], layer)[0]
        done = iter(zip(tensors, maps, strict=True))
        for row, _, class_index in chunk:
            if row in failed:
                empty = np.zeros((1, 1), np.float32)
                yield Explained(row, empty, empty, class_index, failed[row])
            else:
                tensor, cam = next(done)
                yield Explained(row, display_image(tensor), cam, class_index)
