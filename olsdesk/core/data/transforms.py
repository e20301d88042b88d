"""One preprocessing path, file to tensor, for training, evaluation and prediction.

``Preprocessing`` owns every step: the read-time reduction of large files
(``decode_min_side``), the resize to ``resize_size`` (256 for 224), then a random crop
with a horizontal flip for training or the centre crop for evaluation, scaled to
[-1, 1]. It is recorded in every run and checkpoint, and training, validation, the
app's dataset preview, ``olsdesk predict`` and the Predict panel all go through
``Preprocessing.read``/``load``, so a model sees the same tensor for the same file
wherever the file is read.

On a GPU the path can be split at the decode (``device_preprocessing``): a loader
worker stages an 8-bit image as it was decoded (``stage``: uint8, with the crop and flip
it drew), and ``finish`` makes the batch's tensors on the device: the channels, the
resize, the crop, the flip and the scaling, the same steps in the same order as
``__call__``, so the tensors agree with the CPU's to float rounding. An image that is
not 8-bit (a DICOM's windowed floats, a 16-bit PNG) is prepared in the worker as on the
CPU and travels as floats.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from olsdesk.errors import ImageReadError, printable


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

    def read(self, path: str | Path, eight_bit: bool = False) -> np.ndarray:
        """The file as a [0, 1] array, reduced at read time; ImageReadError if unreadable.
        ``eight_bit``: an 8-bit image as its uint8 values instead (what ``stage`` takes)."""
        from olsdesk.core.data.images import read_image

        return read_image(path, self.decode_min_side, eight_bit=eight_bit)

    def load(self, path: str | Path) -> torch.Tensor:
        """The evaluation tensor for a file: exactly what validation feeds the model."""
        return self(self.read(path), train=False)

    def prepare(self, read: Callable[[], np.ndarray], name: str | Callable[[], str],
                train: bool = False, generator: torch.Generator | None = None,
                staged: bool = False) -> tuple[np.ndarray, torch.Tensor | Staged]:
        """The per-file firewall: ``read()`` (a file, or a sample of a dataset) and its
        model input. Whatever goes wrong for this one file becomes an ``ImageReadError``
        whose message is its sentence, with any unexpected traceback in ``detail`` (for
        the log); training skips the file, prediction, evaluation and Grad-CAM give it
        an error row, and the rest go on. Training, prediction, evaluation and Grad-CAM
        all prepare files through here. ``name``: the file's name for that sentence, or
        what gives it (only a failure asks: a loader's sample is not named otherwise).
        ``staged``: an 8-bit image staged for ``finish`` on the device instead
        (``stage``)."""
        try:
            image = read()
            prepare = self.stage if staged else self
            return image, prepare(image, train=train, generator=generator)
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - one file must never stop the others
            name = name() if callable(name) else name
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
        top, left, flip = self._placement(train, generator)
        tensor = tensor[:, top : top + self.image_size, left : left + self.image_size]
        if flip:
            tensor = tensor.flip(-1)
        return (tensor - self.mean) / self.std

    def _placement(self, train: bool, generator: torch.Generator | None
                   ) -> tuple[int, int, bool]:
        """(top, left, flip) of the crop: drawn for training, the centre otherwise."""
        margin = self.resize_size - self.image_size
        if not train:
            return margin // 2, margin // 2, False
        top, left = (torch.randint(0, margin + 1, (2,), generator=generator).tolist()
                     if margin > 0 else (0, 0))
        return top, left, self.hflip and bool(torch.rand((), generator=generator) < 0.5)

    def stage(self, image: np.ndarray, train: bool = False,
              generator: torch.Generator | None = None) -> Staged | torch.Tensor:
        """What a loader worker hands the device for ``image``: an 8-bit image as its
        decoded uint8 values (C x H x W, alpha dropped) with the crop and flip drawn as
        ``__call__`` draws them, for ``finish``; any other image's finished tensor."""
        if np.asarray(image).dtype != np.uint8:
            return self(image, train=train, generator=generator)
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an H x W or H x W x C image, got shape {array.shape}")
        pixels = torch.from_numpy(array[:, :, :3].transpose(2, 0, 1).copy())  # writable
        return Staged(pixels, self._placement(train, generator))

    def finish(self, batch: torch.Tensor | StagedBatch, device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """A batch's model input on ``device``: a batch of finished tensors copied there,
        or a ``StagedBatch`` finished there (``__call__``'s steps, a group of images of
        one decoded size at a time). The copies do not wait for the host (pinned)."""
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True, memory_format=memory_format)
        size = self.image_size
        # in the layout asked for, with its standard strides (a layout taken from the
        # crop's indexing is ambiguous for one channel, and a CPU convolution then takes
        # another algorithm: another rounding)
        out = torch.empty((len(batch), self.channels, size, size), device=device,
                          memory_format=memory_format)
        whole = len(batch.groups) == 1 and batch.finished is None  # one decoded size
        steps = torch.arange(size, device=device)
        for pixels, positions, placement in batch.groups:
            x = pixels.to(device, non_blocking=True).float().div_(255.0)
            if x.shape[1] == 3 and self.channels == 1:  # BT.601 luma, as _to_chw
                red, green, blue = _LUMA
                x = x[:, 0:1] * red + x[:, 1:2] * green + x[:, 2:3] * blue
            elif x.shape[1] == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            r = self.resize_size
            x = F.interpolate(x, size=(r, r), mode="bilinear",
                              antialias=x.shape[2] > r or x.shape[3] > r, align_corners=False)
            top, left, flip = placement.to(device, non_blocking=True).unbind(1)
            rows = top[:, None] + steps  # B x S, and the columns reversed where flipped
            cols = left[:, None] + torch.where(flip[:, None] > 0, size - 1 - steps, steps)
            picked = torch.arange(len(x), device=device)[:, None, None]
            x = x[picked, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
            if whole:
                return torch.div(x - self.mean, self.std, out=out)
            out[positions.to(device, non_blocking=True)] = (x - self.mean) / self.std
        if batch.finished is not None:
            out[batch.finished_positions.to(device, non_blocking=True)] = batch.finished.to(
                device, non_blocking=True)
        return out


# BT.601 luma's weights as float32 (what _to_chw multiplies by), as numbers: a tensor
# would be copied to the device, and wait for it, at every batch
_LUMA = tuple(float(w) for w in np.array([0.299, 0.587, 0.114], dtype=np.float32))


@dataclass(frozen=True)
class Staged:
    """An 8-bit image as decoded (uint8, C x H x W) and its crop: (top, left, flip)."""

    pixels: torch.Tensor
    placement: tuple[int, int, bool]


class StagedBatch:
    """A loader batch for ``Preprocessing.finish``: the staged images stacked a decoded
    size at a time (``groups``: pixels G x C x H x W, their places in the batch, their
    crops G x 3), and the images the worker finished (not 8-bit) with their places."""

    def __init__(self, items: list) -> None:
        self.size = len(items)
        by_shape: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            if isinstance(item, Staged):
                by_shape.setdefault(tuple(item.pixels.shape), []).append(i)
        self.groups = [(torch.stack([items[i].pixels for i in at]),
                        torch.tensor(at, dtype=torch.long),
                        torch.tensor([items[i].placement for i in at], dtype=torch.long))
                       for at in by_shape.values()]
        done = [i for i, item in enumerate(items) if not isinstance(item, Staged)]
        self.finished = torch.stack([items[i] for i in done]) if done else None
        self.finished_positions = torch.tensor(done, dtype=torch.long)

    def __len__(self) -> int:
        return self.size

    def pin_memory(self, device=None) -> StagedBatch:
        """Its tensors in pinned memory (DataLoader's pin_memory calls this)."""
        self.groups = [tuple(t.pin_memory() for t in group) for group in self.groups]
        self.finished_positions = self.finished_positions.pin_memory()
        if self.finished is not None:
            self.finished = self.finished.pin_memory()
        return self


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
