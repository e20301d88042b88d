"""Dropping a folder of many files on the Predict panel: does the window stay responsive,
and how long does the whole list take?

Writes --files small PNGs and a demo checkpoint (smallcnn, 32 px), then, in the same run:
the baseline, ``olsdesk predict`` on the folder (a process, as a user runs it), and the
window's Predict panel predicting the same folder while a 10 ms timer on the GUI thread records how late
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

from ui_latency import LatencyProbe, TimedApplication, summary  # noqa: E402


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
    parser.add_argument("--explain", action="store_true",
                        help="list the GUI thread's events that took over 15 ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "drop"
        write_files(folder, args.files)
        ckpt = checkpoint(Path(tmp) / "runs")

        def cli() -> float:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "olsdesk", "predict", "--checkpoint",
                            str(ckpt), str(folder), "--device", "cpu"], check=True,
                           stdout=subprocess.DEVNULL)
            return time.perf_counter() - started

        before = cli()  # the baseline before and after the panel: this VM's speed drifts

        from PySide6.QtWidgets import QApplication

        from olsdesk.gui.app import isolated_window, wait_for

        app = TimedApplication([]) if args.explain else QApplication([])
        # the panel in the window, as a user has it: the window's garbage collection
        # (on the GUI thread, the start-up's objects frozen) among what is measured
        window = isolated_window(str(Path(tmp) / "app"))
        window.resize(1400, 900)
        window.show()
        wait_for(app, lambda: window.experiment.dataset is not None)
        panel = window.predict
        window.tabs.setCurrentWidget(panel)
        panel.set_checkpoint(ckpt)
        if args.sort:  # the least confident first, as a user reviewing a drop sorts it
            from PySide6.QtCore import Qt

            panel.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)
        probe = LatencyProbe()
        probe.start()
        app.recording = args.explain
        opened = app.clock.nsecsElapsed() / 1e6 if args.explain else 0.0
        started = time.perf_counter()
        panel.predict_paths([str(folder)])
        wait_for(app, lambda: not panel.busy, timeout=3600)
        gui = time.perf_counter() - started
        late = probe.stop()
        rows = panel.rows.rowCount()
        window.close()
        app.processEvents()
        after = cli()
    baseline = (before + after) / 2
    print(f"{args.files:,} files dropped ({rows:,} rows listed)")
    print(f"  olsdesk predict (baseline) {baseline:7.1f} s   ({before:.1f} s before the panel, "
          f"{after:.1f} s after)")
    print(f"  the Predict panel          {gui:7.1f} s   ratio {gui / baseline:5.2f}")
    summary("GUI thread while predicting", late)
    if args.explain:
        print("  the worst stalls:", ", ".join(
            f"{late[i]:.0f} ms at {probe.at_ms[i] / 1000:.2f} s"
            for i in np.argsort(late)[::-1][:5]))
        print("  the slowest events:")
        for at, took, what in sorted(app.slow, key=lambda slow: -slow[1])[:15]:
            print(f"  {took:6.1f} ms at {(at - opened) / 1000:6.2f} s: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
