"""Dropping a folder of many files on the Predict panel: does the window stay responsive,
and how long does the whole list take?

Writes --files small PNGs and a demo checkpoint (smallcnn, 32 px), then, in the same run:
the baseline, ``olsdesk predict`` on the folder (a process, as a user runs it), and the
panel predicting the same folder while a 10 ms timer on the GUI thread records how late
each tick fires (bench/ui_latency.py's probe). Prints both times, their ratio and the
panel's worst stalls. Goals: no stall over 50 ms, total within 1.3x the CLI's.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/predict_drop.py [--files 20000] [--sort]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ui_latency import LatencyProbe, summary  # noqa: E402


def write_files(folder: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:06d}.png")


def checkpoint(runs: Path) -> Path:
    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer

    trainer = Trainer(RunConfig(demo_per_class=10, image_size=32, epochs=1, device="cpu",
                                num_workers=0), runs_dir=runs)
    for _ in trainer.fit():
        pass
    trainer.close()
    return trainer.store.checkpoint_path("latest.pt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--sort", action="store_true",
                        help="sort the list by confidence first (each addition re-sorts it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "drop"
        write_files(folder, args.files)
        ckpt = checkpoint(Path(tmp) / "runs")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "olsdesk", "predict", "--checkpoint", str(ckpt),
                        str(folder), "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        cli = time.perf_counter() - started

        from PySide6.QtWidgets import QApplication

        from olsdesk.gui.app import wait_for
        from olsdesk.gui.panels.predict import PredictPanel

        app = QApplication.instance() or QApplication([])
        panel = PredictPanel()
        panel.resize(1400, 900)
        panel.show()
        panel.set_checkpoint(ckpt)
        if args.sort:  # the least confident first, as a user reviewing a drop sorts it
            from PySide6.QtCore import Qt

            panel.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)
        probe = LatencyProbe()
        probe.start()
        started = time.perf_counter()
        panel.predict_paths([str(folder)])
        wait_for(app, lambda: not panel.busy, timeout=3600)
        gui = time.perf_counter() - started
        late = probe.stop()
        rows = panel.table.rowCount()
        panel.close()
        app.processEvents()
    print(f"{args.files:,} files dropped ({rows:,} rows listed)")
    print(f"  olsdesk predict (baseline) {cli:7.1f} s")
    print(f"  the Predict panel          {gui:7.1f} s   ratio {gui / cli:5.2f}")
    summary("GUI thread while predicting", late)
    return 0


if __name__ == "__main__":
    sys.exit(main())
