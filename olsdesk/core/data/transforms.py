"""One preprocessing path, file to tensor, for training, evaluation and prediction.

``Preprocessing`` owns every step: the read-time reduction of large files
(``decode_min_side``), the resize to ``resize_size`` (256 for 224), then a random crop
with a horizontal flip for training or the centre crop for evaluation, scaled to
[-1, 1]. It is recorded in every run and checkpoint, and training, validation, the
app's dataset preview, ``olsdesk predict`` and the Predict panel all go through
``Preprocessing.read``/``load``, so a model sees the same tensor for the same file
wherever the file is read.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

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
    # a file is reduced at read time by the largest whole factor that keeps its shorter
    # side at least this long: twice the resize, so the antialiased resize still has
    # detail to average; a 1800 px PNG for a 224 px model is read at 292 px, not 1800
    decode_min_side: int = 146

    @classmethod
    def for_size(cls, image_size: int, channels: int, hflip: bool = True) -> Preprocessing:
        """The standard recipe for ``image_size``: resize to size * 256/224, then crop."""
        resize = round(image_size * 256 / 224)
        return cls(image_size, resize, channels, 0.5, 0.5, hflip, 2 * resize)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "decode_min_side" not in values and "resize_size" in values:
            values["decode_min_side"] = 2 * int(values["resize_size"])  # older checkpoints
        return cls(**values)

    def validated(self) -> Preprocessing:
        """Self, or ValueError naming the field out of range (a checkpoint is data from
        outside: an edited size must not make the resize allocate gigabytes)."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(what)

        for name in ("image_size", "resize_size", "channels", "decode_min_side"):
            need(type(getattr(self, name)) is int, f"{name} must be a whole number")
        need(16 <= self.image_size <= 1024, "image_size must be between 16 and 1024")
        need(self.image_size <= self.resize_size <= 2048,
             "resize_size must be between image_size and 2048")
        need(1 <= self.decode_min_side <= 8192, "decode_min_side must be between 1 and 8192")
        need(self.channels in (1, 3), "channels must be 1 or 3")
        # an image is in [0, 1]: beyond these bounds its normalised values overflow float32
        # (a std of 1e-300 turned every prediction into NaN)
        need(isinstance(self.mean, int | float) and not isinstance(self.mean, bool)
             and -1000 <= self.mean <= 1000, "mean must be between -1000 and 1000")
        need(isinstance(self.std, int | float) and not isinstance(self.std, bool)
             and 0.001 <= self.std <= 1000, "std must be between 0.001 and 1000")
        need(isinstance(self.hflip, bool), "hflip must be true or false")
        return self

    def read(self, path: str | Path) -> np.ndarray:
        """The file as a [0, 1] array, reduced at read time; ImageReadError if unreadable."""
        from olsdesk.core.data.images import read_image

        return read_image(path, self.decode_min_side)

    def load(self, path: str | Path) -> torch.Tensor:
        """The evaluation tensor for a file: exactly what validation feeds the model."""
        return self(self.read(path), train=False)

    def prepare(self, read: Callable[[], np.ndarray], name: str, train: bool = False,
                generator: torch.Generator | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """The per-file firewall: ``read()`` (a file, or a sample of a dataset) and its
        model input. Whatever goes wrong for this one file becomes an ``ImageReadError``
        whose message is its sentence, with any unexpected traceback in ``detail`` (for
        the log); training skips the file, prediction, evaluation and Grad-CAM give it
        an error row, and the rest go on. Training, prediction, evaluation and Grad-CAM
        all prepare files through here."""
        from olsdesk.errors import ImageReadError, printable

        try:
            image = read()
            return image, self(image, train=train, generator=generator)
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - one file must never stop the others
            error = ImageReadError(
                f"{printable(Path(name).name)} could not be prepared for the model "
                f"({type(exc).__name__}: {exc}).")
            error.detail = traceback.format_exc()
            raise error from exc

    def __call__(
        self, image: np.ndarray, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A [0, 1] image array (H x W or H x W x C) to a normalised C x S x S tensor."""
        tensor = _to_chw(image, self.channels)
        size = self.resize_size
        # Antialiasing matters only when a side shrinks; enlarging, the antialiased kernel
        # is the bilinear one (the two differ by float rounding, <= 1.2e-7) and 2.5x slower
        shrinks = tensor.shape[1] > size or tensor.shape[2] > size
        tensor = F.interpolate(tensor[None], size=(size, size), mode="bilinear",
                               antialias=shrinks, align_corners=False)[0]
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
