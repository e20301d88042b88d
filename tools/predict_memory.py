"""Peak memory of predicting many files, in the CLI and in the app (docs/RELIABILITY.md).

Writes N PNGs of 512 x 512 pixels, trains a one-epoch checkpoint, then runs in child
processes, each reporting its peak resident memory (ru_maxrss):
  - baseline: the predictor loaded, one file predicted;
  - cli: ``olsdesk predict --json`` over all N files;
  - app baseline: the window built offscreen, nothing dropped;
  - app: the N files dropped on the Predict panel, every row listed.

Usage: python tools/predict_memory.py [--files 2000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

APP = """
import os, resource, sys, tempfile
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
from olsdesk.gui.app import isolated_window, wait_for
app = QApplication(sys.argv)
with tempfile.TemporaryDirectory() as tmp:
    window = isolated_window(tmp)
    window.predict.set_checkpoint(sys.argv[1])
    if len(sys.argv) > 2:
        window.predict.predict_paths([sys.argv[2]])
        wait_for(app, lambda: not window.predict.busy, 1200)
        assert window.predict.rows.rowCount() > 0
    window.close()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
CLI = """
import resource, sys
from olsdesk.cli import main
main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
CLI_BASE = """
import resource, sys
from olsdesk.core.predictor import Predictor
Predictor.from_checkpoint(sys.argv[1], device="cpu").predict([sys.argv[2]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_of(args: list[str]) -> float:
    """MB of the child's peak resident memory (it prints ru_maxrss in KB last)."""
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    from PIL import Image

    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (512, 512), dtype=np.uint8)
        for i in range(args.files):
            Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"{i:05d}.png")
        trainer = Trainer(RunConfig(epochs=1, demo_per_class=8, image_size=64, device="cpu"),
                          runs_dir=Path(tmp) / "runs")
        list(trainer.fit())
        ckpt = str(trainer.store.checkpoint_path())
        one = str(folder / "00000.png")
        cli_base = peak_of([sys.executable, "-c", CLI_BASE, ckpt, one])
        cli = peak_of([sys.executable, "-c", CLI, "predict", "--checkpoint", ckpt, str(folder),
                       "--json", "--device", "cpu"])
        app_base = peak_of([sys.executable, "-c", APP, ckpt])
        app = peak_of([sys.executable, "-c", APP, ckpt, str(folder)])
    print(f"{args.files} PNGs of 512 x 512: CLI peak {cli:.0f} MB (one file: {cli_base:.0f} MB, "
          f"ratio {cli / cli_base:.2f}); app peak {app:.0f} MB (empty window: {app_base:.0f} MB, "
          f"ratio {app / app_base:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
