"""Samples as a torch ``Dataset`` for ``DataLoader``: the per-file firewall of training,
validation and evaluation. A file that cannot be read becomes its sentence and the batch
goes on without it; ``collate`` hands the batch and the failures to the consumer."""

from __future__ import annotations

import os

import numpy as np
import torch

from olsdesk.core.data.transforms import Preprocessing, Staged, StagedBatch
from olsdesk.errors import ImageReadError


class TorchSamples(torch.utils.data.Dataset):
    """Samples -> (tensor, label, index); an unreadable sample becomes (None, message).

    A training sample's crop and flip are drawn from a generator seeded by (seed, epoch,
    index) when the key is an ``(index, epoch)`` pair (``EpochKeys``): the same image in
    the same epoch is augmented alike in any loader process, so a run resumed mid-way,
    or run with another number of workers, trains on exactly the same inputs.

    ``staged``: 8-bit images are staged for ``Preprocessing.finish`` on the device
    (``Preprocessing.stage``) instead of finished here."""

    def __init__(self, samples, preprocessing: Preprocessing, train: bool,
                 seed: int = 0, staged: bool = False) -> None:
        self.samples = samples
        self.preprocessing = preprocessing
        self.train = train
        self.seed = seed
        self.staged = staged
        # one generator, seeded anew for each training image: it then draws what a new
        # one of that seed would (building one was 1 of the 2 us an image took)
        self._generator = torch.Generator()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        """One sample through the per-file firewall (``Preprocessing.prepare``): a file
        that fails becomes its sentence (with any traceback, for the run's log) and the
        batch goes on without it."""
        index, epoch = key if isinstance(key, tuple) else (key, None)
        generator = None
        if self.train and epoch is not None:
            generator = self._generator.manual_seed(
                (self.seed * 1_000_003 + epoch) * 10_000_019 + index)
        try:
            _, tensor = self.preprocessing.prepare(
                lambda: self.samples.load(index, self.preprocessing, self.staged),
                lambda: self.samples.describe(index), train=self.train, generator=generator,
                staged=self.staged)
        except ImageReadError as exc:
            detail = getattr(exc, "detail", "")
            return None, str(exc) + (f"\n{detail}" if detail else ""), index
        return tensor, int(self.samples.labels[index]), index


class EpochKeys(torch.utils.data.Sampler):
    """A sampler's indices as ``(index, epoch)`` keys: the epoch travels with each key
    into the loader's (persistent) worker processes, which a dataset attribute set in
    the main process would not reach. ``set_epoch`` passes on to the sampler within."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        epoch = self.epoch
        return ((int(i), epoch) for i in self.sampler)


def collate(batch):
    """(images, labels, indices, failures): images stacked, or a ``StagedBatch`` when
    the samples were staged for the device."""
    good = [b for b in batch if b[0] is not None]
    failed = [(index, message) for image, message, index in batch if image is None]
    if not good:
        return None, None, None, failed
    items = [b[0] for b in good]
    images = (StagedBatch(items) if any(isinstance(i, Staged) for i in items)
              else torch.stack(items))
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    indices = torch.tensor([b[2] for b in good], dtype=torch.long)
    return images, labels, indices, failed


def default_workers(samples, requested: int | None = None, device=None) -> int:
    """Loader processes: as requested, else

    - on a GPU (``device`` of type cuda or mps), every core but one, shared among the
      processes torchrun started on this machine, at most 16 each: the GPU waits for the
      CPU's decoding and cropping otherwise (ResNet-50 at 224 px on an H100 trained at
      1,668 images/s with 4 workers and 2,836 with 15, its bare step doing 3,100-3,700);
    - on the CPU, which also does the training, none for in-memory data (nothing to
      decode in parallel) and up to 4 for files, leaving a core to the main process.
    """
    if requested is not None:
        return requested
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    if device is not None and getattr(device, "type", device) in ("cuda", "mps"):
        here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(1, min(16, cores // here - 1))
    if not hasattr(samples, "paths"):
        return 0
    return min(4, max(0, cores - 1))


class BalancedSampler(torch.utils.data.Sampler):
    """A class-balanced epoch: as many draws as training images, each picking a class
    uniformly among those with images, then one of its images uniformly (with
    replacement), so a rare class is seen as often as the largest. Seeded by (seed,
    epoch) through ``set_epoch``, as DistributedSampler: a resumed run draws the same
    batches. Under torchrun each process takes every ``world_size``-th draw of the same
    sequence."""

    def __init__(self, labels, num_classes: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.order = torch.argsort(labels, stable=True)  # images, class by class
        counts = torch.bincount(labels, minlength=num_classes)
        self.starts = torch.cumsum(counts, 0) - counts
        self.counts = counts
        self.present = torch.nonzero(counts).flatten()
        self.total = len(labels) - len(labels) % world_size  # every process the same count
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.world_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_043 + self.epoch)
        classes = self.present[torch.randint(len(self.present), (self.total,),
                                             generator=generator)]
        within = (torch.rand(self.total, generator=generator, dtype=torch.float64)
                  * self.counts[classes]).long()
        draws = self.order[self.starts[classes] + within]
        return iter(draws[self.rank::self.world_size].tolist())


def inverse_frequency(labels, num_classes: int) -> torch.Tensor:
    """Class weights N / (K n_c) (scikit-learn's 'balanced'): a class of average size
    weighs 1, one ten times rarer 10; a class without training images weighs 0."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)
