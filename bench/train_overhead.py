"""How much does Trainer.fit() cost over a bare PyTorch loop? And OLS over CE?

1. The same model, data and seed trained for a few epochs through ``Trainer.fit()``
   (with all its epoch-end analysis: metrics, calibration, PCA, separation, run files,
   checkpoints) and through a bare loop (the same forward, backward and optimiser step,
   plus a plain validation pass computing top-1), alternating, in one run. The bare
   loop's model and batches take the trainer's layout (``core.device.memory_format``):
   the ratio is olsdesk's own cost, not the layout's gain (bench/memory_format.py).
   Target: Trainer / bare <= 1.05.
2. One training step (forward, loss, backward, step) with OLS against the same with
   CE, alternating. Target: OLS / CE <= 1.03.

Prints both times and the ratio. Not a test: timings never pass or fail anything.
Usage: python bench/train_overhead.py [--epochs 3] [--rounds 3] [--model smallcnn]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from olsdesk.config import RunConfig
from olsdesk.core.data.sources import open_dataset
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.device import memory_format
from olsdesk.core.losses import build_loss
from olsdesk.core.models import build_model
from olsdesk.core.trainer import Trainer


class PlainSet(torch.utils.data.Dataset):
    def __init__(self, samples, prep, train):
        self.samples, self.prep, self.train = samples, prep, train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.prep(self.samples.load(i, self.prep), train=self.train), int(self.samples.labels[i])


def bare_steps(config: RunConfig, dataset) -> Iterator[str]:
    """The bare loop a batch at a time: it yields "ready" once built, then "train" or
    "validate" after each batch (so that a bench can time it in turns with another run)."""
    torch.manual_seed(config.seed)
    prep = Preprocessing.for_size(config.effective_image_size, dataset.channels)
    layout = memory_format(torch.device("cpu"))  # as the trainer's on the CPU
    model = build_model(config.model, dataset.num_classes, dataset.channels).to(
        memory_format=layout)
    loss_fn = build_loss(config.loss, dataset.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    train = DataLoader(PlainSet(dataset.train, prep, True), config.batch_size, shuffle=True,
                       generator=gen)
    val = DataLoader(PlainSet(dataset.val, prep, False), config.batch_size)
    yield "ready"
    for _ in range(config.epochs):
        model.train()
        loss_fn.train()
        for x, y in train:
            loss = loss_fn(model(x.to(memory_format=layout)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield "train"
        loss_fn.next_epoch()
        model.eval()
        correct = 0
        for x, y in val:
            with torch.no_grad():  # a batch at a time: grad mode is the other run's between
                correct += (model(x.to(memory_format=layout)).argmax(1) == y).sum().item()
            yield "validate"


def bare_loop(config: RunConfig, dataset) -> float:
    """The bare loop's seconds, once built."""
    steps = bare_steps(config, dataset)
    next(steps)
    start = time.perf_counter()
    for _ in steps:
        pass
    return time.perf_counter() - start


def trainer_loop(config: RunConfig, dataset) -> float:
    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, runs_dir=runs, dataset=dataset)
        trainer.prepare()
        start = time.perf_counter()
        for _ in trainer.fit():
            pass
        return time.perf_counter() - start


def step_time(loss_name: str, model, x, y, steps: int) -> float:
    loss_fn = build_loss(loss_name, int(y.max()) + 1).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    config = RunConfig(model=args.model, loss="ols", epochs=args.epochs, device="cpu",
                       demo_per_class=args.per_class, num_workers=0)
    dataset = open_dataset(config)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model}, demo "
          f"{len(dataset.train)}+{len(dataset.val)} images, {args.epochs} epochs, OLS")
    trainer_loop(config.replace(epochs=1), dataset)  # warm-up
    times = {"trainer": [], "bare": []}
    for r in range(args.rounds):  # alternate which goes first
        runs = (("trainer", trainer_loop), ("bare", bare_loop))
        for name, fn in runs if r % 2 == 0 else runs[::-1]:
            times[name].append(fn(config, dataset))
        print(f"  round {r + 1}: Trainer.fit {times['trainer'][-1]:.2f}s  "
              f"bare {times['bare'][-1]:.2f}s")
    t, b = statistics.median(times["trainer"]), statistics.median(times["bare"])
    print(f"Trainer.fit median {t:.2f}s, bare loop median {b:.2f}s, ratio {t / b:.3f} "
          f"(target <= 1.05)")

    torch.manual_seed(0)
    model = build_model(args.model, 12, 1)
    x = torch.randn(64, 1, 64, 64)
    y = torch.arange(64) % 12
    step_time("ce", model, x, y, 3)  # warm-up
    steps = {"ols": [], "ce": []}
    for r in range(args.rounds * 2):  # ABBA order so drift and warm caches cancel
        order = ("ols", "ce") if r % 2 == 0 else ("ce", "ols")
        for name in order:
            steps[name].append(step_time(name, model, x, y, args.steps))
    o, c = statistics.median(steps["ols"]), statistics.median(steps["ce"])
    print(f"step ({args.steps} steps, batch 64): OLS median {o:.3f}s, CE median {c:.3f}s, "
          f"ratio {o / c:.3f} (target <= 1.03)")
    logits = torch.randn(64, 12, requires_grad=True)
    for name in ("ce", "ols"):
        fn = build_loss(name, 12).train()
        start = time.perf_counter()
        for _ in range(2000):
            fn(logits, y).backward()
        print(f"  loss alone, forward + backward: {name} "
              f"{(time.perf_counter() - start) / 2000 * 1e6:.0f} us a batch")


if __name__ == "__main__":
    main()
