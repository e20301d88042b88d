"""Is olsdesk's training loader the bottleneck? Images per second against torchvision's.

On the same folder of PNGs (default 2,000 of 224 px, three channels collapsed to gray
as medical images are, in 4 class folders), one pass of:

- olsdesk: the training ``DataLoader`` a ``Trainer`` builds (``Preprocessing``: read,
  resize to 256, random 224 crop, flip, scale), batch 64;
- torchvision: ``ImageFolder`` with ``Resize(256)``, ``RandomCrop(224)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``, batch 64: once with a grayscale
  loader (the same one-channel tensors olsdesk makes: the fair comparison) and once with
  ImageFolder's default RGB loader (the standard pipeline as people run it);

with one loader worker and with one per core, alternating which goes first, the median
of the rounds. Prints both rates and olsdesk / torchvision (target >= 1.0). Not a test.
Usage: python bench/loader.py [--files 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader


def make_folder(root: Path, files: int, size: int = 224) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size), dtype=np.uint8)
    for i in range(files):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i, axis=0)).save(folder / f"{i:05d}.png")


def olsdesk_loader(root: Path, workers: int, runs: Path) -> DataLoader:
    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer

    config = RunConfig(data=str(root), image_size=224, batch_size=64, device="cpu",
                       num_workers=workers, val_fraction=0.01, epochs=1)
    trainer = Trainer(config, runs_dir=runs)
    trainer.prepare()
    trainer.close()
    return trainer.train_loader


def _gray(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def torchvision_loader(root: Path, workers: int, gray: bool) -> DataLoader:
    from torchvision import datasets, transforms

    pipeline = transforms.Compose([
        transforms.Resize(256), transforms.RandomCrop(224), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize([0.5] * (1 if gray else 3),
                                                    [0.5] * (1 if gray else 3))])
    folder = (datasets.ImageFolder(str(root), pipeline, loader=_gray) if gray
              else datasets.ImageFolder(str(root), pipeline))
    return DataLoader(folder, batch_size=64, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0)


def rate(loader: DataLoader) -> float:
    """Images per second of one full pass (the first batch's start-up included)."""
    started, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch[1])
    return seen / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loaders' workers do the work, as in training
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pngs"
        make_folder(root, args.files)
        print(f"torch {torch.__version__}; {args.files} PNGs of 224 px; {cores} cores")
        for workers in sorted({1, cores}):
            loaders = {"olsdesk": olsdesk_loader(root, workers, Path(tmp) / "runs"),
                       "torchvision gray": torchvision_loader(root, workers, True),
                       "torchvision RGB": torchvision_loader(root, workers, False)}
            for loader in loaders.values():
                rate(loader)  # warm-up: start the workers, fill the page cache
            rates = {name: [] for name in loaders}
            for r in range(args.rounds):
                order = list(loaders) if r % 2 == 0 else list(loaders)[::-1]
                for name in order:
                    rates[name].append(rate(loaders[name]))
            median = {name: statistics.median(values) for name, values in rates.items()}
            ours = median["olsdesk"]
            print(f"{workers} worker(s): olsdesk {ours:.0f} img/s; "
                  + "; ".join(f"{name} {median[name]:.0f} img/s, ratio {ours / median[name]:.2f}"
                              for name in ("torchvision gray", "torchvision RGB"))
                  + " (target >= 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
