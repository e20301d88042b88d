"""One preprocessing path for training, evaluation and prediction.

``Preprocessing`` is recorded in every run and checkpoint, so a prediction made months
later takes exactly the evaluation path the model was trained with. The recipe follows
the published one: resize to ``resize_size`` (256 for 224), then a random crop with a
horizontal flip for training or the centre crop for evaluation, scaled to [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to turn an image array into the model's input tensor."""

    image_size: int = 64
    resize_size: int = 73
    channels: int = 1
    mean: float = 0.5
    std: float = 0.5
    hflip: bool = True

    @classmethod
    def for_size(cls, image_size: int, channels: int, hflip: bool = True) -> Preprocessing:
        """The standard recipe for ``image_size``: resize to size * 256/224, then crop."""
        return cls(image_size, round(image_size * 256 / 224), channels, 0.5, 0.5, hflip)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def __call__(
        self, image: np.ndarray, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A [0, 1] image array (H x W or H x W x C) to a normalised C x S x S tensor."""
        tensor = _to_chw(image, self.channels)
        tensor = F.interpolate(
            tensor[None], size=(self.resize_size, self.resize_size), mode="bilinear",
            antialias=True, align_corners=False,
        )[0]
        margin = self.resize_size - self.image_size
        if train:
            top, left = (
                torch.randint(0, margin + 1, (2,), generator=generator).tolist()
                if margin > 0 else (0, 0)
            )
            flip = self.hflip and bool(torch.rand((), generator=generator) < 0.5)
        else:
            top = left = margin // 2
            flip = False
        tensor = tensor[:, top : top + self.image_size, left : left + self.image_size]
        if flip:
            tensor = tensor.flip(-1)
        return (tensor - self.mean) / self.std


def _to_chw(image: np.ndarray, channels: int) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an H x W or H x W x C image, got shape {array.shape}")
    if array.shape[2] == 4:  # drop alpha
        array = array[:, :, :3]
    if channels == 1 and array.shape[2] == 3:
        # ITU-R BT.601 luma, as PIL's convert("L")
        array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        array = array[:, :, None]
    elif channels == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
