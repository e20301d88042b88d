"""The GPU path, measured: run by bench/gpu_check.sh on a machine with a CUDA GPU.

    python bench/gpu_check.py train    # (a) Trainer.fit against a bare loop, ResNet-50 AMP
    python bench/gpu_check.py ols      # (b) OLS on CUDA against the CPU, same inputs
    python bench/gpu_check.py files    # (f) Trainer.fit from a PNG folder against a bare
                                       #     loop fed by the same files, and (m) the
                                       #     stored confidences against the predictor's
    python bench/gpu_check.py ddp      # (h) DDP on every GPU against N x one GPU, and
                                       #     the per-step all-reduce of the stop flags
    python bench/gpu_check.py compile  # (g) Trainer.fit with --compile against without
    python bench/gpu_check.py profile  # (i) 20 training steps under torch.profiler, and
                                       #     (k) the host-device synchronisations a step

(a), (f) and (k) each run twice: with the preprocessing on the CPU (the loader workers
finish every tensor) and on the GPU (``device_preprocessing``: the workers send the
decoded uint8 images, the GPU resizes, crops, flips and scales each batch).

(a) trains ResNet-50 at 224 px with AMP (bf16 where the card has it) and channels-last,
on synthetic in-memory images, through ``Trainer.fit`` (its loader, preprocessing and
per-batch bookkeeping; the epoch-end analysis is not in its images per second) and
through a bare loop on tensors already on the GPU (the ceiling), and prints both images
per second and their ratio, with the rate of the Trainer's loader alone (one pass,
batches copied to the GPU, no model): when that is near the Trainer's rate, the CPU
preprocessing is what holds it back, not the training step.
(b) runs the same logits and targets through ``OnlineLabelSmoothing`` on CUDA and on the
CPU for a few epochs and prints the largest difference of the losses and matrices.

(f) writes a folder of 224-px grayscale PNGs (16 classes x 256) and trains it two ways,
2 epochs each, the second one timed: ``Trainer.fit`` with its default loader, and a bare
loop whose torch DataLoader (as many workers, pinned memory) decodes the same files with
PIL and crops, flips and normalises them with torchvision, into the same model step.
(m) then takes each of (f)'s two runs' last epoch: the confidence it stored for each
embedded validation image against ``Predictor.predict``'s from that epoch's checkpoint on
the same device (#23's calibration numbers equal between training and prediction on the
GPU), their largest difference against the goal of 1e-5.
(h) on a machine with two or more GPUs: ``olsdesk train --gpus N`` (torchrun, NCCL) of
ResNet-50 on a MedMNIST-shaped archive of 224-px images against ``--gpus 1``, the
second epoch's images per second (all processes together) and N-GPU / (N x one GPU);
then, under torchrun on every GPU, the mean time of the all-reduce the trainer does every
step to agree on the stop and empty-batch flags (host tensors over a gloo group, so the
host never waits for the GPU's queued work there).
(g) trains the same model and data through ``Trainer.fit`` with ``compile`` off and on,
3 epochs each, then resumes the compiled run for one more, and prints each one's images
per second after warm-up (its last epoch) and how many times dynamo compiled a frame again
(``recompiles``: the goal is none after the first epoch).
(i) runs 20 steps of ``Trainer.fit`` under ``torch.profiler`` and writes the top CPU and
CUDA ops to ``profile.txt`` in ``--out`` (under ``$OUT`` on a lent machine); (k) counts, with
``torch.cuda.set_sync_debug_mode("warn")``, the host-device synchronisations over an
epoch's steps (the loss is read every 20 steps on CUDA: one sync per 20 is by design).

Without CUDA it says so and exits 2, unless ``--allow-cpu`` (a dry run of the code path
with tiny sizes, for testing this script on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

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


def bare_step(model_name: str, classes: int, device: torch.device):
    """The bare loop's training step, (step(x, y), memory format, AMP dtype or None):
    the model in the trainer's layout (channels-last), under bf16 autocast on CUDA
    (float16 with a gradient scaler on a card without bf16), AdamW; what the Trainer is
    measured against."""
    from olsdesk.core.device import memory_format
    from olsdesk.core.models import build_model

    fmt = memory_format(device)  # the trainer's layout
    model = build_model(model_name, classes, 1).to(device).to(memory_format=fmt).train()
    dtype = None
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step, fmt, dtype


def check_train(device: torch.device, tiny: bool, workers: int | None) -> None:
    from olsdesk.core.device import describe_device
    from olsdesk.core.report import EpochReport
    from olsdesk.core.trainer import Trainer

    config, data = _config(device, tiny, workers)
    model_name, size, batch = config.model, config.image_size, config.batch_size
    images, classes = len(data.train), data.num_classes
    rates = {}  # device_preprocessing -> (Trainer.fit's rate, its loader's alone)
    for staged in (False, True):
        with tempfile.TemporaryDirectory() as runs:
            trainer = Trainer(config.replace(device_preprocessing=staged), runs_dir=runs,
                              dataset=data)
            reports = [r for r in trainer.fit() if isinstance(r, EpochReport)]
            workers = trainer.num_workers
            started, seen = time.perf_counter(), 0
            for batch_images, _, _, _ in trainer.train_loader:
                trainer.preprocessing.finish(batch_images, device, trainer.memory_format)
                seen += len(batch_images)
            if device.type == "cuda":
                torch.cuda.synchronize()
            # epoch 2's rate: warm
            rates[staged] = reports[-1].images_per_second, seen / (time.perf_counter() - started)

    step, fmt, dtype = bare_step(model_name, classes, device)
    x = torch.randn(batch, 1, size, size, device=device).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    steps = images // batch

    def epoch() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - started)

    epoch()  # warm-up
    bare_rate = epoch()
    for staged, (trainer_rate, loader_rate) in rates.items():
        print(f"(a) {model_name} {size} px, batch {batch}, AMP {dtype or 'off'}, "
              f"{describe_device(device)}, {workers} loader workers, preprocessing on the "
              f"{'GPU' if staged else 'CPU'}: Trainer.fit {trainer_rate:.0f} img/s, bare loop "
              f"{bare_rate:.0f} img/s, ratio {trainer_rate / bare_rate:.2f}; the Trainer's "
              f"loader alone {loader_rate:.0f} img/s")


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


def _config(device: torch.device, tiny: bool, workers: int | None, **changes):
    """(a)'s run, as a RunConfig, with its synthetic dataset."""
    from olsdesk.config import RunConfig

    model_name, size, batch, images, classes = (
        ("smallcnn", 32, 8, 64, 4) if tiny else ("resnet50", 224, 128, 8192, 165))
    config = RunConfig(data="demo", model=model_name, image_size=size, batch_size=batch,
                       epochs=2, device=device.type, num_workers=0 if tiny else workers,
                       loss="ols", embedding_samples=256, test_fraction=0.0)
    return config.replace(**changes), synthetic_dataset(images, size, classes)


def _write_png(job) -> None:
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (size // 16 + 1, size // 16 + 1)).astype(np.uint8)
    image = np.kron(coarse, np.ones((16, 16), dtype=np.uint8))[:size, :size]
    Image.fromarray(image).save(path)


def png_folder(root: Path, classes: int, per_class: int, size: int) -> list[tuple[str, int]]:
    """``classes`` folders of ``per_class`` PNGs of ``size`` px; their (path, class)."""
    import multiprocessing

    files = []
    for c in range(classes):
        (root / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
        files += [(str(root / f"class{c:03d}" / f"{i:04d}.png"), c) for i in range(per_class)]
    with multiprocessing.get_context("fork").Pool() as pool:
        pool.map(_write_png, [(path, i, size) for i, (path, _) in enumerate(files)],
                 chunksize=64)
    return files


class _Files(torch.utils.data.Dataset):
    def __init__(self, files, transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.files[i]
        with Image.open(path) as image:
            return self.transform(image.convert("L")), label


def check_files(device: torch.device, tiny: bool, workers: int | None) -> None:
    from torchvision import transforms

    from olsdesk.config import RunConfig
    from olsdesk.core.report import EpochReport
    from olsdesk.core.trainer import Trainer

    model_name, classes, per_class, size, crop, batch = (
        ("smallcnn", 4, 16, 40, 32, 8) if tiny else ("resnet50", 16, 256, 224, 224, 128))
    with tempfile.TemporaryDirectory() as folder:
        files = png_folder(Path(folder) / "data", classes, per_class, size)
        config = RunConfig(data=str(Path(folder) / "data"), model=model_name,
                           image_size=crop, batch_size=batch, epochs=2, device=device.type,
                           num_workers=workers, loss="ce", embedding_samples=64,
                           val_fraction=0.05, test_fraction=0.0)
        trainer_rates = {}  # device_preprocessing -> Trainer.fit's epoch-2 rate
        apart = {}  # device_preprocessing -> (m)'s largest confidence difference, images
        for staged in (False, True):
            trainer = Trainer(config.replace(device_preprocessing=staged),
                              runs_dir=Path(folder) / f"runs{staged:d}")
            reports = [r for r in trainer.fit() if isinstance(r, EpochReport)]
            trainer_rates[staged], workers = reports[-1].images_per_second, trainer.num_workers
            apart[staged] = stored_against_predicted(trainer, reports[-1], device)
        train_files = files[: len(trainer.dataset.train)]

        transform = transforms.Compose([
            transforms.RandomResizedCrop(crop, scale=(0.7, 1.0), antialias=True),
            transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5])])
        loader = torch.utils.data.DataLoader(
            _Files(train_files, transform), batch_size=batch, shuffle=True,
            num_workers=workers, pin_memory=device.type == "cuda",
            persistent_workers=workers > 0, drop_last=False)
        step, fmt, _ = bare_step(model_name, classes, device)

        def epoch() -> float:
            started, seen = time.perf_counter(), 0
            for x, y in loader:
                step(x.to(device, non_blocking=True, memory_format=fmt),
                     y.to(device, non_blocking=True))
                seen += len(y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return seen / (time.perf_counter() - started)

        epoch()  # warm-up
        bare_rate = epoch()
    for staged, trainer_rate in trainer_rates.items():
        print(f"(f) {len(files)} PNGs of {size} px on disk, {model_name} at {crop} px, "
              f"{workers} loader workers, preprocessing on the {'GPU' if staged else 'CPU'}: "
              f"Trainer.fit {trainer_rate:.0f} img/s, bare loop {bare_rate:.0f} img/s, "
              f"ratio {trainer_rate / bare_rate:.2f}")
    for staged, (difference, count) in apart.items():
        print(f"(m) preprocessing on the {'GPU' if staged else 'CPU'}: the stored validation "
              f"confidence against the predictor's on {device.type} ({count} images): "
              f"largest difference {difference:.2e} (goal <= 1e-5)")


def stored_against_predicted(trainer, report, device: torch.device) -> tuple[float, int]:
    """(m): the confidences the last epoch stored for its embedded validation images
    against ``Predictor.predict``'s from that epoch's checkpoint (latest.pt) on the same
    device: their largest difference, and how many images."""
    from olsdesk.core.predictor import Predictor

    names = trainer.store.info(names=True).validation_names
    paths = [names[i] for i in report.embedding_indices]
    predictor = Predictor.from_checkpoint(trainer.store.checkpoint_path("latest.pt"),
                                          device=device.type)
    shown = np.array([p.top_probabilities[0] for p in predictor.predict(paths)])
    return float(np.abs(shown - report.embedding_confidences).max()), len(paths)


def check_ddp(device: torch.device, tiny: bool, workers: int | None) -> None:
    import json
    import subprocess

    gpus = torch.cuda.device_count() if device.type == "cuda" else 2  # dry run: gloo
    if gpus < 2:
        print(f"(h) {gpus} GPU here: DDP scaling needs two or more; not measured")
        return
    size, images, model_name, batch = (28, 256, "smallcnn", 16) if tiny else (
        224, 8192, "resnet50", 128)
    rng = np.random.default_rng(0)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.npz"
        arrays = {}
        for split, n in (("train", images), ("val", 256), ("test", 64)):
            arrays[f"{split}_images"] = rng.integers(0, 255, (n, size, size), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 16)[:, None]
        np.savez(data, **arrays)
        for n in (1, gpus):
            runs = Path(folder) / f"runs{n}"
            command = [sys.executable, "-m", "olsdesk", "train", "--data", str(data),
                       "--model", model_name, "--image-size", str(size), "--batch-size",
                       str(batch), "--epochs", "2", "--device", device.type, "--runs-dir",
                       str(runs), "--gpus", str(n)]
            if workers is not None:
                command += ["--workers", str(workers)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                print(f"(h) olsdesk train --gpus {n} failed:\n{done.stderr[-2000:]}")
                return
            last = (next(runs.iterdir()) / "metrics.jsonl").read_text().splitlines()[-1]
            rates[n] = json.loads(last)["images_per_second"]
        reduce = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node", str(gpus), str(Path(__file__)), "allreduce"]
            + (["--allow-cpu"] if device.type != "cuda" else []),
            capture_output=True, text=True, timeout=300)
    print(f"(h) {model_name}, batch {batch} a process, on {device.type}: 1 process "
          f"{rates[1]:.0f} img/s, {gpus} processes {rates[gpus]:.0f} img/s, scaling "
          f"{rates[gpus] / (gpus * rates[1]):.2f} of {gpus} x one (goal >= 0.9); "
          f"{reduce.stdout.strip() or reduce.stderr[-500:]}")


def time_allreduce(device: torch.device) -> None:
    """Under torchrun: the trainer's per-step agreement on its flags, timed."""
    import torch.distributed as dist

    from olsdesk.core.distributed import Context

    context = Context.from_env(device.type)
    where = context.device(device)
    for _ in range(20):
        context.any_of((False, False))
    if where.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(500):
        context.any_of((False, False))
    took = (time.perf_counter() - started) / 500
    if context.main:
        print(f"the flags' all-reduce (gloo, host tensors) {1e6 * took:.0f} us a step")
    dist.destroy_process_group()


def check_compile(device: torch.device, tiny: bool, workers: int | None) -> None:
    import torch._dynamo

    from olsdesk.core.report import EpochReport
    from olsdesk.core.trainer import Trainer

    with tempfile.TemporaryDirectory() as runs:
        for compiled in (False, True):
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            config, data = _config(device, tiny, workers, epochs=3, compile=compiled)
            trainer = Trainer(config, runs_dir=runs, dataset=data, run_name=f"c{compiled:d}")
            started = time.perf_counter()
            reports = [r for r in trainer.fit() if isinstance(r, EpochReport)]
            took = time.perf_counter() - started
            again = sum(torch._dynamo.utils.counters["recompiles"].values())
            line = (f"(g) compile {'on ' if compiled else 'off'}: epoch 3 "
                    f"{reports[-1].images_per_second:.0f} img/s, epoch 1 "
                    f"{reports[0].images_per_second:.0f} img/s, 3 epochs in {took:.1f} s, "
                    f"recompiles {again}")
            if compiled:  # a resume compiles once more, in its new process; then never
                torch._dynamo.utils.counters.clear()
                resumed = Trainer.from_run(trainer.store.path, epochs=4, dataset=data)
                report = [r for r in resumed.fit() if isinstance(r, EpochReport)][-1]
                line += (f"; resumed epoch 4 {report.images_per_second:.0f} img/s, "
                         f"recompiles {sum(torch._dynamo.utils.counters['recompiles'].values())}")
            print(line, flush=True)


def check_profile(device: torch.device, tiny: bool, workers: int | None, out: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    from olsdesk.core.trainer import Trainer

    config, data = _config(device, tiny, workers, epochs=1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, runs_dir=runs, dataset=data)
        fit = trainer.fit()
        steps = [item for item, _ in zip(fit, range(5), strict=False)]  # warm
        with profile(activities=activities) as prof:
            steps = [item for item, _ in zip(fit, range(20), strict=False)]
        fit.close()
    syncs = {}  # device_preprocessing -> synchronisations over 30 steps
    for staged in (False, True):
        with tempfile.TemporaryDirectory() as runs:
            trainer = Trainer(config.replace(device_preprocessing=staged), runs_dir=runs,
                              dataset=data)
            fit = trainer.fit()
            steps = [item for item, _ in zip(fit, range(5), strict=False)]  # warm
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                steps = [item for item, _ in zip(fit, range(30), strict=False)]
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
            syncs[staged] = sum("synchroniz" in str(w.message) for w in caught)
            fit.close()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text(table + "\n")
    print(f"(i) 20 of fit's steps profiled: {out / 'profile.txt'}; the top ops:")
    print("\n".join(table.splitlines()[:8]))
    for staged, count in syncs.items():
        print(f"(k) host-device synchronisations over {len(steps)} steps, preprocessing on the "
              f"{'GPU' if staged else 'CPU'}: "
              + (f"{count}" if device.type == "cuda" else "n/a on the CPU"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("train", "ols", "files", "ddp", "compile",
                                          "profile", "allreduce"))
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT") or tempfile.gettempdir())
                        / "olsdesk-gpu-check",
                        help="(i)'s profile.txt goes in this folder (default: "
                             "$OUT/olsdesk-gpu-check, else the temporary folder's)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="dry run on the CPU with tiny sizes (tests this script)")
    parser.add_argument("--workers", type=int, default=None,
                        help="(a)'s loader workers (default: the Trainer's own choice)")
    args = parser.parse_args()
    device = need_cuda(args.allow_cpu)
    tiny = device.type != "cuda"
    if tiny:  # the dry run goes through the GPU's preprocessing code too, on the CPU
        from olsdesk.core import trainer

        trainer.STAGED_DEVICES = (*trainer.STAGED_DEVICES, "cpu")
    if args.check == "profile":
        check_profile(device, tiny, args.workers, args.out)
    elif args.check == "allreduce":  # (h)'s part under torchrun
        time_allreduce(device)
    else:
        {"train": check_train, "ols": check_ols, "files": check_files, "ddp": check_ddp,
         "compile": check_compile}[args.check](
            device, tiny, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
