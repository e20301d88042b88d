"""The Compare tab with 200 runs of 165 classes: how soon is the list on screen, how long
does selecting runs take, and how much memory do the selected runs hold?

Builds ``--runs`` finished runs of ``--epochs`` epochs x ``--classes`` classes (2,000
embedded validation images an epoch, as RadImageNet's validation set gives) from one real
demo run: the epochs' arrays are written once and hard-linked into every run, each run
with its own loss, seed and curve. Then, in one process, a Compare panel at 1400 x 900:

- shown: the time from the tab being shown to its table holding every run, the first
  time and again (a tab switch), and the GUI thread's worst stall meanwhile; baseline:
  reading the same runs' files (config.json, run.json, metrics.jsonl, notes) in a loop;
  the first time also without the runs' summary.json (every metrics.jsonl parsed, as
  before the file), alternately with and without on fresh panels;
- selecting 50 runs, then all of them: the time until their curves are drawn, the worst
  stall, the time to read them and the memory their epochs hold (tracemalloc's count of
  what the panel's reader keeps); baseline: the same runs read with every epoch's arrays,
  as the panel read them before and as a run is opened.

Not a test: timings never fail a build.

Usage: QT_QPA_PLATFORM=offscreen python bench/compare_runs.py [--runs 200] [--epochs 30]
       [--classes 165]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from follow_latency import build_run  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from ui_latency import LatencyProbe  # noqa: E402

from olsdesk.core.runs import SUMMARY, RunStore  # noqa: E402

LOSSES = ("ce", "ls", "ols", "tfkd", "focal")


def build_runs(root: Path, runs: int, epochs: int, k: int) -> list[Path]:
    """``runs`` finished run folders under ``root``; their epochs' arrays shared (hard
    links), their configs and metrics their own."""
    store, reports = build_run(root / "template", epochs, k, 2000)
    for report in reports:
        store.write_epoch(report)
    info = store.info()
    store.write_info(type(info)(**{**info.__dict__, "status": "finished"}))
    lines = (store.path / "metrics.jsonl").read_text().splitlines()
    paths = []
    for i in range(runs):
        folder = root / "runs" / f"radimagenet-r50-{LOSSES[i % len(LOSSES)]}-s{i:03d}"
        shutil.copytree(store.path, folder, copy_function=os.link)
        for name in ("config.json", "run.json", "metrics.jsonl", "summary.json"):  # their own
            text = (folder / name).read_text()
            (folder / name).unlink()
            (folder / name).write_text(text)
        config = json.loads((folder / "config.json").read_text())
        config.update(loss=LOSSES[i % len(LOSSES)], seed=i, lr=0.1 * (1 + i % 3))
        (folder / "config.json").write_text(json.dumps(config))
        shifted = []
        for line in lines:
            record = json.loads(line)
            record["val_top1"] = min(1.0, record["val_top1"] + 0.001 * i)
            shifted.append(json.dumps(record))
        (folder / "metrics.jsonl").write_text("\n".join(shifted) + "\n")
        RunStore(folder).write_summary()  # as write_epoch leaves it
        paths.append(folder)
    shutil.rmtree(root / "template")
    return paths


def read_files(paths: list[Path]) -> float:
    """The baseline for showing the list: each run's small files read, nothing parsed."""
    started = time.perf_counter()
    for path in paths:
        for name in ("config.json", "run.json", "metrics.jsonl", "notes.md"):
            try:
                (path / name).read_bytes()
            except FileNotFoundError:
                pass
    return time.perf_counter() - started


def timed(app, probe: LatencyProbe, start, done, limit: float = 600.0) -> tuple[float, float]:
    """Seconds from ``start()`` until ``done()`` holds, and the worst stall meanwhile (ms)."""
    probe.start()
    started = time.perf_counter()
    start()
    while not done():
        app.processEvents()
        if time.perf_counter() - started > limit:
            raise TimeoutError("the panel did not finish")
        time.sleep(0.001)
    app.processEvents()  # painted
    took = time.perf_counter() - started
    settle = time.perf_counter() + 0.1  # the tick after the last handler records its stall
    while time.perf_counter() < settle:
        app.processEvents()
        time.sleep(0.001)
    late = probe.stop()
    return took, float(late.max(initial=0.0))


def seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def held_mb(read) -> tuple[float, object]:
    """What ``read()`` returns and the memory it holds (MB) once it has returned."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    found = read()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / 1e6, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--classes", type=int, default=165)
    args = parser.parse_args()

    from olsdesk.core.report import ARRAY_FIELDS
    from olsdesk.core.runs import RunReader
    from olsdesk.gui.panels.compare import ComparePanel

    app = QApplication.instance() or QApplication(sys.argv)
    with tempfile.TemporaryDirectory(prefix="olsdesk-compare-") as tmp:
        started = time.perf_counter()
        paths = build_runs(Path(tmp), args.runs, args.epochs, args.classes)
        print(f"{args.runs} runs of {args.epochs} epochs x {args.classes} classes built in "
              f"{time.perf_counter() - started:.0f} s")
        files_s = min(read_files(paths) for _ in range(3))
        probe = LatencyProbe()
        summaries = {path: (path / SUMMARY).read_bytes() for path in paths}

        def shown(panel, when: str) -> None:
            took, worst = timed(app, probe, panel.refresh,
                                lambda: not panel.busy and panel.runs.rowCount() == args.runs)
            print(f"shown ({when}): {took:.3f} s to list {args.runs} runs, worst stall "
                  f"{worst:.0f} ms; baseline (reading their files) {files_s:.3f} s")

        # a session's first showing, with each run's summary.json and (the runs of
        # before, parsing every metrics.jsonl) without, alternately on fresh panels
        for _ in range(2):
            for with_summaries in (True, False):
                for path in paths:
                    if with_summaries:
                        (path / SUMMARY).write_bytes(summaries[path])
                    else:
                        (path / SUMMARY).unlink()
                panel = ComparePanel(Path(tmp) / "runs")
                panel.resize(1400, 900)
                panel.show()
                app.processEvents()
                shown(panel, "first time, " + ("with" if with_summaries else "without")
                      + " summary.json")
                panel.close()
        for path in paths:
            (path / SUMMARY).write_bytes(summaries[path])
        panel = ComparePanel(Path(tmp) / "runs")
        panel.resize(1400, 900)
        panel.show()
        app.processEvents()
        shown(panel, "first time")
        shown(panel, "again")

        for count in (50, args.runs):
            chosen = paths[:count]
            panel.reader.keep_only([])
            took, worst = timed(app, probe, lambda c=chosen: panel.select_runs(c),
                                lambda c=count: not panel.busy and panel.curve_count() == c)
            light_s = seconds(lambda c=chosen: RunReader().reports(c))
            whole_s = seconds(lambda c=chosen: RunReader(ARRAY_FIELDS, False).reports(c))
            held, _ = held_mb(lambda c=chosen: RunReader().reports(c))
            whole, _ = held_mb(lambda c=chosen: [RunStore(p).load_reports() for p in c])
            print(f"select {count} runs: {took:.2f} s to draw, worst stall {worst:.0f} ms; "
                  f"reading them {light_s:.2f} s vs {whole_s:.2f} s with every array "
                  f"(ratio {light_s / whole_s:.3f}); their epochs hold {held:.0f} MB vs "
                  f"{whole:.0f} MB read as a run is opened (ratio {held / whole:.3f})")
        panel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
