"""The GPU path, measured: run by bench/gpu_check.sh on a machine with a CUDA GPU.

    python bench/gpu_check.py train    # (a) Trainer.fit against a bare loop, ResNet-50 AMP
    python bench/gpu_check.py ols      # (b) OLS on CUDA against the CPU, same inputs

(a) trains ResNet-50 at 224 px with AMP (bf16 where the card has it) and channels-last,
on synthetic in-memory images, through ``Trainer.fit`` (its loader, preprocessing and
per-batch bookkeeping; the epoch-end analysis is not in its images per second) and
through a bare loop on tensors already on the GPU (the ceiling), and prints both images
per second and their ratio, with the rate of the Trainer's loader alone (one pass,
batches copied to the GPU, no model): when that is near the Trainer's rate, the CPU
preprocessing is what holds it back, not the training step.
(b) runs the same logits and targets through ``OnlineLabelSmoothing`` on CUDA and on the
CPU for a few epochs and prints the largest difference of the losses and matrices.

Without CUDA it says so and exits 2, unless ``--allow-cpu`` (a dry run of the code path
with tiny sizes, for testing this script on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch


def need_cuda(allow_cpu: bool) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if allow_cpu:
        return torch.device("cpu")
    print("gpu_check: no CUDA GPU is visible to this PyTorch "
          f"({torch.__version__}); this check measures the GPU path, so run it on a "
          "machine with one.", file=sys.stderr)
    sys.exit(2)


def synthetic_dataset(images: int, size: int, classes: int):
    from olsdesk.core.data.sources import ArraySamples, Dataset

    rng = np.random.default_rng(0)
    labels = np.arange(images) % classes
    pixels = rng.integers(0, 255, (images, size, size), dtype=np.uint8)
    samples = ArraySamples(pixels, labels, "synthetic")
    val = samples.subset(np.arange(min(images, 256)))
    return Dataset("synthetic", "demo", tuple(f"class {i}" for i in range(classes)), samples,
                   val, 1)


def check_train(device: torch.device, tiny: bool, workers: int | None) -> None:
    from olsdesk.config import RunConfig
    from olsdesk.core.device import describe_device
    from olsdesk.core.models import build_model
    from olsdesk.core.report import EpochReport
    from olsdesk.core.trainer import Trainer

    model_name, size, batch, images, classes = (
        ("smallcnn", 32, 8, 64, 4) if tiny else ("resnet50", 224, 128, 8192, 165))
    data = synthetic_dataset(images, size, classes)
    config = RunConfig(data="demo", model=model_name, image_size=size, batch_size=batch,
                       epochs=2, device=device.type, num_workers=0 if tiny else workers,
                       loss="ols", embedding_samples=256, test_fraction=0.0)
    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, runs_dir=runs, dataset=data)
        reports = [r for r in trainer.fit() if isinstance(r, EpochReport)]
        trainer_rate = reports[-1].images_per_second  # epoch 2: warm
        workers = trainer.num_workers
        started, seen = time.perf_counter(), 0
        for batch_images, _, _, _ in trainer.train_loader:
            batch_images.to(device, non_blocking=True)
            seen += len(batch_images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        loader_rate = seen / (time.perf_counter() - started)

    model = build_model(model_name, classes, 1).to(device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    amp = device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    steps = images // batch

    def epoch() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - started)

    epoch()  # warm-up
    bare_rate = epoch()
    print(f"(a) {model_name} {size} px, batch {batch}, AMP {dtype if amp else 'off'}, "
          f"{describe_device(device)}, {workers} loader workers: Trainer.fit "
          f"{trainer_rate:.0f} img/s, bare loop {bare_rate:.0f} img/s, ratio "
          f"{trainer_rate / bare_rate:.2f}; the Trainer's loader alone {loader_rate:.0f} img/s")


def check_ols(device: torch.device, tiny: bool, workers: int | None) -> None:
    from olsdesk.core.losses import OnlineLabelSmoothing

    classes, n = (5, 64) if tiny else (165, 8192)
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(n, classes, generator=g) * 3 for _ in range(3)]
    targets = [torch.randint(0, classes, (n,), generator=g) for _ in range(3)]
    results = {}
    for where in ("cpu", device.type):
        loss = OnlineLabelSmoothing(classes).to(where)
        losses = []
        for z, t in zip(logits, targets, strict=True):
            losses.append(float(loss(z.to(where), t.to(where))))
            loss.next_epoch()
        results[where] = (np.array(losses), loss.soft_labels.detach().cpu().numpy())
    cpu, other = results["cpu"], results[device.type]
    print(f"(b) OLS, {classes} classes, 3 epochs of {n}: {device.type} against cpu, largest "
          f"difference of the losses {np.abs(cpu[0] - other[0]).max():.2e}, of the soft-label "
          f"matrix {np.abs(cpu[1] - other[1]).max():.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("train", "ols"))
    parser.add_argument("--allow-cpu", action="store_true",
                        help="dry run on the CPU with tiny sizes (tests this script)")
    parser.add_argument("--workers", type=int, default=None,
                        help="(a)'s loader workers (default: the Trainer's own choice)")
    args = parser.parse_args()
    device = need_cuda(args.allow_cpu)
    tiny = device.type != "cuda"
    {"train": check_train, "ols": check_ols}[args.check](device, tiny, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
