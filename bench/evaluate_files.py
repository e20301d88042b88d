"""predictions.csv at RadImageNet's size: 200,000 test images x 165 classes (66 million
probabilities: raw and temperature-scaled), with a conformal set a row.

Measured side by side in one run, each written into the same temporary folder:

- the writer: ``evaluation._write_predictions`` (numbers formatted in numpy, a block of
  rows at a time) against olsdesk 0.3's (the csv module, ``"%.8g"`` a row), whose bytes
  it must equal (checked here too);
- the binary copy beside it: ``predictions.npz`` (float32 probabilities and the rest)
  against ``np.save`` of the same float64 matrix, the issue's baseline.

    .venv/bin/python bench/evaluate_files.py [--images 200000] [--classes 165]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from olsdesk.core.evaluation import Evaluation, _write_predictions, _write_predictions_npz
from olsdesk.errors import printable


def synthetic(n: int, k: int) -> Evaluation:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, k)) * 3
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    names = tuple(f"CT/abd/class{i:03d}" for i in range(k))
    labels = rng.integers(0, k, n)
    sets = np.exp(log_probs) > 0.05
    return Evaluation(
        checkpoint="best.pt", epoch=1, class_names=names, source="synthetic",
        names=[f"/data/radimagenet/test/{names[y]}/img-{i:07d}.png"
               for i, y in enumerate(labels)],
        labels=labels, logits=logits.astype(np.float32), temperature=1.3, unreadable=[],
        raw=None, scaled=None, resamples=0, seed=0, n_bins=15, prediction_sets=sets)


def write_03(ev: Evaluation, path: Path) -> None:
    """olsdesk 0.3's _write_predictions (without the columns this data has none of)."""
    names = ev.class_names
    values_all = np.concatenate([ev.probabilities("none"), ev.probabilities("temperature")],
                                axis=1)
    row_format = ",".join(["%.8g"] * values_all.shape[1])
    header = [f"p_{n}" for n in names] + [f"q_{n}" for n in names]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "prediction"] + header
                        + ["prediction_set", "familiarity", "unfamiliar", "error"])
        sets = ev.prediction_sets
        for i, name in enumerate(ev.names):
            values = row_format % tuple(values_all[i])
            members = "|".join(names[k] for k in np.flatnonzero(sets[i]))
            writer.writerow([printable(name), names[ev.labels[i]], names[ev.predicted[i]]]
                            + values.split(",") + [members, "", "", ""])


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=165)
    args = parser.parse_args()
    ev = synthetic(args.images, args.classes)
    ev.predicted  # noqa: B018 - computed before any timing (each writer computes the
    # probabilities from the logits as it writes them)
    print(f"{args.images:,} images x {args.classes} classes")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = timed(lambda: write_03(ev, tmp / "old.csv"))
        new = timed(lambda: _write_predictions(ev, tmp / "new.csv"))
        same = digest(tmp / "old.csv") == digest(tmp / "new.csv")
        npz = timed(lambda: _write_predictions_npz(ev, tmp / "predictions.npz"))
        matrix = np.concatenate([ev.probabilities("none"), ev.probabilities("temperature")],
                                axis=1)
        save = timed(lambda: np.save(tmp / "matrix.npy", matrix))
        mb = {p.name: p.stat().st_size / 1e6 for p in tmp.iterdir()}
    print(f"predictions.csv   0.3 (csv module): {old:6.2f} s   numpy blocks: {new:6.2f} s"
          f"   {old / new:.1f}x faster   same bytes: {same}   {mb['new.csv']:,.0f} MB")
    print(f"predictions.npz   {npz:6.2f} s  {mb['predictions.npz']:,.0f} MB   against np.save "
          f"of the float64 matrix: {save:.2f} s  {mb['matrix.npy']:,.0f} MB "
          f"({npz / save:.2f}x the time)")


if __name__ == "__main__":
    main()
