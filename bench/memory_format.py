"""The layout of a model's weights and batches on this machine's CPU: a training step and
a validation (no-grad, eval) batch of each model, in PyTorch's default layout (N x C x H x W
in memory) and channels-last (N x H x W x C), side by side in turns, the order alternating.
``core.device.memory_format`` picks channels-last where this shows it faster.

    .venv/bin/python bench/memory_format.py [--models smallcnn:28:1 resnet18:64:3 ...]
                                            [--batch 64] [--rounds 3]

Each model is ``name:pixels:channels``. Printed: milliseconds a batch in each layout and
their ratio (channels-last / default; below 1: channels-last is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from olsdesk.core.models import build_model

LAYOUTS = {"default": torch.contiguous_format, "channels-last": torch.channels_last}


def seconds_a_batch(name: str, size: int, channels: int, batch: int, layout, train: bool,
                    steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(name, 165, channels).to(memory_format=layout)
    x = (torch.rand(batch, channels, size, size) * 2 - 1).to(memory_format=layout)
    y = torch.randint(0, 165, (batch,))
    optimizer = torch.optim.AdamW(model.parameters())
    model.train(train)

    def step():
        if train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    for _ in range(2):  # warm: oneDNN's primitives, the optimiser's state
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[
        "smallcnn:28:1", "smallcnn:64:3", "resnet18:64:3", "mobilenet_v2:64:3",
        "resnet50:112:3", "vgg19:64:3"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.6,
                        help="about how long each timing runs")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}; "
          f"median ms a batch of {args.rounds} rounds")
    for spec in args.models:
        name, size, channels = spec.split(":")
        size, channels = int(size), int(channels)
        for train in (False, True):
            one = seconds_a_batch(name, size, channels, args.batch, torch.contiguous_format,
                                  train, 1)
            steps = max(2, round(args.seconds / one))
            times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
            for r in range(args.rounds):  # in turns, who goes first alternating
                order = list(LAYOUTS) if r % 2 == 0 else list(LAYOUTS)[::-1]
                for layout in order:
                    times[layout].append(seconds_a_batch(name, size, channels, args.batch,
                                                         LAYOUTS[layout], train, steps))
            base, last = (statistics.median(times[layout]) for layout in LAYOUTS)
            print(f"  {name:13s} {size:4d} px, {channels} ch, {'training' if train else 'eval':8s}"
                  f"  default {base * 1e3:8.1f} ms   channels-last {last * 1e3:8.1f} ms   "
                  f"ratio {last / base:.3f}", flush=True)


if __name__ == "__main__":
    main()
