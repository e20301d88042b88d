"""The trainer's epoch-end analysis at RadImageNet's validation size: 135,000 images, 165
classes, every epoch (``Trainer._report``: metrics, the temperature and its cross-fit,
the other recalibrators, conformal calibration, unfamiliar-input scores, smooth
reliability and its band, the PCA and separation of the embedded sample).

Baseline, side by side on the same arrays: top-1, NLL and ECE alone (what a bare loop
would report). Printed: the analysis's seconds (median of --rounds), the baseline's, their
ratio, and where the analysis's time goes (each function it calls, timed on the way).

    .venv/bin/python bench/epoch_end.py [--images 135000] [--classes 165] [--features 2048]
                                        [--rounds 3]

``--features``: the penultimate layer's width (ResNet-50's 2048; MobileNetV2's 1280),
which the unfamiliar-input fit works on, for the embedded sample only.

``--beside``: also ``Trainer.fit`` for ``--epochs`` epochs on a MedMNIST-shaped archive of
``--train-images`` at 28 px and the same number of classes (smallcnn), its validation's
predictions replaced by the 135,000 above, three ways in turn: the epoch end beside the
next epoch's training (as the trainer runs it on a GPU), in line on the training thread
(as on the CPU), and a run whose epoch end works on its small real validation set (the
baseline: what a bare loop's epoch end costs). Printed: each run's seconds and ratio to
the baseline, how long training waited at each epoch end (for the epoch before's, beside
training), and what the host copy of ResNet-50's weights and optimiser state costs.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from olsdesk.config import RunConfig
from olsdesk.core import metrics, ood, trainer
from olsdesk.core.trainer import Trainer


def validation(n: int, k: int, embedded: int, width: int, seed: int = 0) -> dict:
    """What ``Trainer._validate`` hands the epoch end: float32 softmax made float64 (each
    row divided by its sum), an over-confident classifier of imbalanced classes (as
    RadImageNet's)."""
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.full(k, 0.3))
    labels = rng.choice(k, size=n, p=prior)
    logits = (rng.normal(size=(n, k)) * 2.4).astype(np.float32)
    logits[np.arange(n), labels] += 4.0 * (rng.random(n) < 0.8)
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    embed = np.zeros(n, dtype=bool)
    embed[np.sort(rng.choice(n, min(embedded, n), replace=False))] = True
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    return {"probs": probs, "labels": labels, "indices": np.arange(n),
            "energy": np.log(np.exp(logits).sum(1)), "embedded": np.flatnonzero(embed),
            "features": rng.normal(size=(int(embed.sum()), width)).astype(np.float32),
            "mask": embed}


def report(val: dict, k: int) -> float:
    cfg = RunConfig()
    stub = types.SimpleNamespace(
        config=cfg, embed_mask=val["mask"], skipped=[],
        dataset=types.SimpleNamespace(num_classes=k, class_names=[f"c{i}" for i in range(k)]))
    started = time.perf_counter()
    Trainer._report(stub, 0, np.eye(k), np.ones(k), 0.1, 2.0, 0.5, 0.8, val, 60.0, 100.0, 0)
    return time.perf_counter() - started


def baseline(val: dict) -> float:
    started = time.perf_counter()
    metrics.topk_accuracy(val["probs"], val["labels"], 1)
    metrics.negative_log_likelihood(val["probs"], val["labels"])
    metrics.expected_calibration_error(val["probs"], val["labels"])
    return time.perf_counter() - started


def breakdown(val: dict, k: int) -> dict[str, float]:
    """Seconds in each function the epoch end calls by name, from one more run."""
    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    patched = {}
    for name in dir(trainer):
        fn = getattr(trainer, name)
        if isinstance(fn, types.FunctionType) and fn.__module__.startswith("olsdesk.core.") \
                and fn.__module__ != "olsdesk.core.trainer":
            patched[name] = fn
            setattr(trainer, name, timed(name, fn))
    original_metrics = {n: getattr(metrics, n) for n in dir(metrics)
                        if isinstance(getattr(metrics, n), types.FunctionType)
                        and not n.startswith("_")}
    for name, fn in original_metrics.items():
        setattr(metrics, name, timed(f"metrics.{name}", fn))
    # the unfamiliar-input fit's parts: its full fit, five folds, and the sample's Gram
    # matrix (computed by whichever asks first)
    original_ood = {n: getattr(ood, n) for n in ("fit_density", "_held_out_score",
                                                 "_sample_gram")}
    for name, fn in original_ood.items():
        setattr(ood, name, timed(f"ood.{name}", fn))
    try:
        spent["(all)"] = report(val, k)
    finally:
        for name, fn in patched.items():
            setattr(trainer, name, fn)
        for name, fn in original_metrics.items():
            setattr(metrics, name, fn)
        for name, fn in original_ood.items():
            setattr(ood, name, fn)
    return spent


def archive(path: Path, n: int, k: int, seed: int = 0) -> Path:
    """A MedMNIST-shaped archive: ``n`` training images of ``k`` classes, 28 px, and a
    small validation and test split (two images a class)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in (("train", n), ("val", 2 * k), ("test", 2 * k)):
        labels = np.arange(size) % k
        images = rng.integers(0, 60, size=(size, 28, 28), dtype=np.uint8)
        images[:, 4:24, 4:24] += (labels * 1.2).astype(np.uint8)[:, None, None]
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


def fit_seconds(data: Path, epochs: int, val: dict | None, inline: bool,
                device: str = "cpu") -> tuple[float, list]:
    """One ``Trainer.fit``: its seconds, and what training waited at each epoch end."""
    cfg = RunConfig(data=str(data), model="smallcnn", image_size=28, epochs=epochs, batch_size=64,
                    device=device, num_workers=0)
    waits: list[float] = []
    with tempfile.TemporaryDirectory() as runs:
        run = Trainer(cfg, runs_dir=runs)
        run.prepare()
        if val is not None:  # RadImageNet's validation predictions, not the small set's
            run.embed_mask = val["mask"]
            validate = run._validate

            def substituted(epoch):
                yield from validate(epoch)
                return val

            run._validate = substituted
        collect = run._collect

        def timed_collect(wait=True):
            started = time.perf_counter()
            yield from collect(wait)
            if wait and run._pending is None:
                waits.append(time.perf_counter() - started)

        run._collect = timed_collect
        run.epoch_end_beside = not inline
        started = time.perf_counter()
        for _ in run.fit():
            pass
        return time.perf_counter() - started, waits


def beside(val: dict, k: int, images: int, epochs: int, device: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        data = archive(Path(folder) / "radimagenet_shaped.npz", images, k)
        fit_seconds(data, 1, None, False, device)  # warm: imports, first allocations
        runs = {"beside training (GPU's way)": (val, False), "in line (CPU's way)": (val, True),
                "baseline: small validation": (None, True)}
        seconds = {name: fit_seconds(data, epochs, v, inline, device)
                   for name, (v, inline) in runs.items()}
    base = seconds["baseline: small validation"][0]
    copied = host_copy_seconds()
    print(f"Trainer.fit on {device}, {epochs} epochs of {images:,} training images, {k} classes, "
          f"{len(val['labels']):,} validation predictions at each epoch end:")
    for name, (took, waits) in seconds.items():
        waited = ", ".join(f"{w:.3f}" for w in waits)
        print(f"  {name:28s} {took:7.2f} s  ratio {took / base:5.3f}   training waited at "
              f"the epoch ends: {waited} s")
    print("  (the last wait: the run's end, for its last epoch's end)")
    print(f"the host copy of ResNet-50's weights and SGD momentum an epoch end takes: "
          f"{copied:.3f} s")


def host_copy_seconds() -> float:
    from olsdesk.core.models import build_model

    model = build_model("resnet50", 165, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 3, 64, 64)).sum().backward()
    optimizer.step()  # the momentum buffers exist from the first step
    started = time.perf_counter()
    trainer._host_copy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=135_000)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beside", action="store_true")
    parser.add_argument("--train-images", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="--beside's training device (cuda: "
                        "the epoch end beside a GPU's training, as the trainer runs it there)")
    args = parser.parse_args()
    val = validation(args.images, args.classes, RunConfig().embedding_samples, args.features)
    ours, base = [], []
    for _ in range(args.rounds):  # alternating, so that a busy moment hits both
        ours.append(report(val, args.classes))
        base.append(baseline(val))
    a, b = statistics.median(ours), statistics.median(base)
    print(f"{args.images:,} x {args.classes} validation predictions, {args.features} "
          f"features, median of {args.rounds} rounds")
    print(f"  epoch-end analysis        {a:7.3f} s")
    print(f"  top-1 + NLL + ECE (base)  {b:7.3f} s   ratio {a / b:6.1f}")
    spent = breakdown(val, args.classes)
    total = spent.pop("(all)")
    print(f"where the time goes (one more run, {total:.3f} s; nested calls counted in each):")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        if seconds >= 0.01 * total:
            print(f"  {name:40s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
    if args.beside:
        beside(val, args.classes, args.train_images, args.epochs, args.device)


if __name__ == "__main__":
    main()
