"""How many correct predictions an OLS row needs before it beats the uniform row.

OLS builds row c of next epoch's targets from the mean softmax of the epoch's correct
predictions of class c. A rare class (RadImageNet has classes of a few hundred images
beside 69,000) gets a row from a handful of images. This measures, on a model trained
here, how far a row averaged over n correct predictions lies from the row averaged over
all of them (total-variation distance of the off-diagonal part, renormalised: the class
similarities OLS is for), against the uniform row's distance, for n = 1 ... 50 (400
draws each, every class with at least 60 correct predictions).

Baseline, side by side: the uniform row (what a class falls back to). Printed: for each
n the mean distance and its ratio to the uniform row's; the smallest n below 1 is the
fewest correct predictions a row should be built from.

    .venv/bin/python bench/ols_rows.py [--data demo|DIR] [--epochs 4]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from olsdesk.config import RunConfig
from olsdesk.core.data.loader import TorchSamples, collate
from olsdesk.core.trainer import Trainer

SIZES = (1, 2, 3, 5, 8, 10, 20, 50)


def correct_softmax(trainer: Trainer) -> tuple[np.ndarray, np.ndarray]:
    """The trained model's softmax on the training images it classifies correctly."""
    loader = torch.utils.data.DataLoader(
        TorchSamples(trainer.dataset.train, trainer.preprocessing, train=False),
        batch_size=128, collate_fn=collate)
    probs, labels = [], []
    trainer.model.eval()
    with torch.no_grad():
        for images, y, _, _ in loader:
            if images is None:
                continue
            p = torch.softmax(trainer.model(images.to(trainer.device)).float(), 1).cpu()
            keep = p.argmax(1) == y
            probs.append(p[keep].numpy())
            labels.append(y[keep].numpy())
    return np.concatenate(probs), np.concatenate(labels)


def off_diagonal(rows: np.ndarray, c: int) -> np.ndarray:
    """The rows' mass off class c, renormalised to sum to 1."""
    rest = np.delete(rows, c, axis=-1)
    return rest / np.clip(rest.sum(axis=-1, keepdims=True), 1e-12, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="demo")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args()
    config = RunConfig(data=args.data, loss="ce", epochs=args.epochs, device="cpu",
                       image_size=64 if args.data == "demo" else 32, audit_data=False)
    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, runs_dir=runs)
        for _ in trainer.fit():
            pass
        probs, labels = correct_softmax(trainer)
    k = probs.shape[1]
    rng = np.random.default_rng(0)
    uniform = np.full(k - 1, 1.0 / (k - 1))
    distances = {n: [] for n in SIZES}
    baseline = []
    classes = [c for c in range(k) if (labels == c).sum() >= 60]
    for c in classes:
        rows = probs[labels == c]
        full = off_diagonal(rows.mean(axis=0), c)
        baseline.append(0.5 * np.abs(uniform - full).sum())
        for n in SIZES:
            picks = np.array([rng.choice(len(rows), n, replace=False)
                              for _ in range(args.draws)])
            estimate = off_diagonal(rows[picks].mean(axis=1), c)
            distances[n].append(0.5 * np.abs(estimate - full).sum(axis=1).mean())
    base = float(np.mean(baseline))
    print(f"{args.data}: {k} classes, {len(classes)} with >= 60 correct training "
          f"predictions ({len(labels):,} in all); uniform row's distance {base:.3f}")
    fewest = None
    for n in SIZES:
        d = float(np.mean(distances[n]))
        if fewest is None and d < base:
            fewest = n
        print(f"  n = {n:>2}: distance {d:.3f}, ratio to uniform {d / base:.2f}")
    print(f"fewest correct predictions whose row beats the uniform one: {fewest}")


if __name__ == "__main__":
    main()
