"""Does the window stay responsive while it trains?

A 10 ms QTimer on the GUI thread records how late each tick fires, first with the app
idle (the baseline), then while the app trains the demo set through its own worker, in
the same run. Prints the 95th percentile and the worst stall of each and their ratio.
Target: worst stall under 50 ms while training. Not a test: timings never fail a build.

Usage: QT_QPA_PLATFORM=offscreen python bench/ui_latency.py [--epochs 3] [--idle 5]
       [--tab embedding|soft_labels|reliability|curves] [--explain] [--classes 165]

--classes 165 trains a folder of RadImageNet's 165 class names (bench/radimagenet.py's,
nested modality/anatomy/finding) instead of the demo, --per-class small real PNGs each.

--explain lists the GUI-thread events that took over 15 ms while training (what stalled
the window: a paint, a queued slot, a timer), with when they ran, and for each the
olsdesk and library lines the GUI thread was at when a sampler thread looked (every 5 ms,
once the event had run 10 ms: where a slot spends its time, or a GIL wait and what the
other threads were doing then); it slows every event a little, so its stall figures are
not the bench's.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QElapsedTimer, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

INTERVAL_MS = 10


class LatencyProbe:
    """Records, for every tick of a repeating timer, how late it fired."""

    def __init__(self) -> None:
        self.clock = QElapsedTimer()
        self.late_ms: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self.late_ms.clear()
        self.at_ms: list[float] = []  # when each tick fired (ms since start)
        self.clock.start()
        self.last = 0
        self.timer.start()

    def stop(self) -> np.ndarray:
        self.timer.stop()
        return np.array(self.late_ms)

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed() / 1e6
        if self.last:
            self.late_ms.append(max(0.0, now - self.last - INTERVAL_MS))
            self.at_ms.append(now)
        self.last = now


class TimedApplication(QApplication):
    """Times every event the GUI thread handles; keeps those over ``SLOW_MS``."""

    SLOW_MS = 15.0

    def __init__(self, argv) -> None:
        super().__init__(argv)
        self.clock = QElapsedTimer()
        self.clock.start()
        self.slow: list[tuple[float, float, str]] = []  # (at ms, took ms, what)
        self.recording = False
        self.depth = 0  # nested notify()s: only the outermost event is timed
        self.began = None  # perf_counter() when the outermost event began
        self.seen: collections.Counter = collections.Counter()  # its sampled stacks
        self.gui = threading.get_ident()

    def notify(self, receiver, event) -> bool:  # noqa: N802 - Qt's name
        if not self.recording or self.depth:
            return super().notify(receiver, event)
        start = self.clock.nsecsElapsed()
        self.depth, self.began = 1, time.perf_counter()
        try:
            result = super().notify(receiver, event)
        finally:
            self.depth, self.began = 0, None
        took = (self.clock.nsecsElapsed() - start) / 1e6
        seen, self.seen = self.seen, collections.Counter()
        if took > self.SLOW_MS:
            what = type(receiver).__name__
            if what == "QWidget" and receiver.parent() is not None:  # a view's viewport
                what = f"{type(receiver.parent()).__name__}'s QWidget"
            where = "".join(f"\n      {n}x {stack}" for stack, n in seen.most_common(4))
            self.slow.append((start / 1e6, took, f"{what} {event.type().name}{where}"))
        return result

    def sample(self) -> None:
        """Every 5 ms: while an event has run over 10 ms, where each thread is."""
        while True:
            time.sleep(0.005)
            began = self.began
            if began is None or time.perf_counter() - began < 0.010:
                continue
            frames = sys._current_frames()
            here = _where(frames.get(self.gui))
            others = [_where(f) for t, f in frames.items()
                      if t not in (self.gui, threading.get_ident())]
            self.seen[f"GUI at {here}; others at " + " | ".join(o for o in others if o)] += 1


def _where(frame) -> str:
    """A thread's innermost three lines of olsdesk or a library, innermost first."""
    if frame is None:
        return ""
    lines = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
             for f in reversed(traceback.extract_stack(frame))
             if "olsdesk" in f.filename or "site-packages" in f.filename]
    return " < ".join(lines[:3])


def summary(name: str, late: np.ndarray) -> tuple[float, float]:
    p95, worst = float(np.percentile(late, 95)), float(late.max())
    print(f"{name:>9}: {len(late)} ticks, median late {np.median(late):.1f} ms, "
          f"p95 {p95:.1f} ms, worst stall {worst:.1f} ms")
    return p95, worst


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle baseline")
    parser.add_argument("--tab", default="embedding",
                        choices=("embedding", "soft_labels", "reliability", "curves"),
                        help="the tab showing while it trains (embedding: the heaviest)")
    parser.add_argument("--explain", action="store_true",
                        help="list the slow GUI-thread events while training")
    parser.add_argument("--classes", type=int, default=0,
                        help="train a folder of this many classes (165: RadImageNet's names)")
    parser.add_argument("--per-class", type=int, default=12)
    args = parser.parse_args()
    app = TimedApplication(sys.argv) if args.explain else QApplication(sys.argv)
    if args.explain:
        threading.Thread(target=app.sample, daemon=True).start()
    from olsdesk.gui.app import isolated_window, wait_for

    with tempfile.TemporaryDirectory() as tmp:
        window = isolated_window(tmp, args.epochs)
        window.resize(1400, 880)
        window.show()
        wait_for(app, lambda: window.experiment.dataset is not None)
        if args.classes:
            folder = class_folder(os.path.join(tmp, "data"), args.classes, args.per_class)
            window.state.edit_config(image_size=32)
            window.experiment.set_data(folder)
            wait_for(app, lambda: window.experiment.dataset is not None
                     and len(window.experiment.dataset.class_names) == args.classes)
        window.tabs.setCurrentWidget(getattr(window, args.tab))
        probe = LatencyProbe()

        probe.start()
        end = time.monotonic() + args.idle
        wait_for(app, lambda: time.monotonic() >= end, poll=0.001)
        idle = probe.stop()

        probe.start()
        if args.explain:
            app.recording, began = True, app.clock.nsecsElapsed() / 1e6
            window.session.report_added.connect(lambda r: app.slow.append(
                (app.clock.nsecsElapsed() / 1e6, 0.0, f"-- epoch {r.epoch} arrived")))
        window.experiment.train_button.click()
        wait_for(app, lambda: not window.training and window.last_status, poll=0.001)
        busy = probe.stop()
        window.close()
        if args.explain:
            app.recording = False
            for at, took, what in app.slow:
                print(f"  {(at - began) / 1000:7.2f} s  {took:6.1f} ms  {what}")
            worst = np.argsort(busy)[::-1][:6]
            print("  the worst stalls ended at: " + ", ".join(
                f"{probe.at_ms[i] / 1000:.2f} s ({busy[i]:.0f} ms)" for i in sorted(worst)))
    data = f"{args.classes} classes x {args.per_class}" if args.classes else "demo"
    print(f"olsdesk window, offscreen; training {args.epochs} epochs of {data} "
          f"({window.last_status}), {args.tab} tab showing")
    idle_p95, idle_worst = summary("idle", idle)
    busy_p95, busy_worst = summary("training", busy)
    print(f"ratio training/idle: p95 {busy_p95 / max(idle_p95, 0.1):.2f}, worst "
          f"{busy_worst / max(idle_worst, 0.1):.2f}; target worst stall < 50 ms: "
          f"{'met' if busy_worst < 50 else 'NOT met'}")
    return 0


def class_folder(root: str, classes: int, per_class: int) -> str:
    """``classes`` class folders (RadImageNet's names at 165) of 32 px gray PNGs, each
    class a different brightness and stripe, so a model learns something."""
    from PIL import Image

    if classes == 165:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from radimagenet import class_names

        names = class_names()
    else:
        names = [f"class{c:03d}" for c in range(classes)]
    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        folder = os.path.join(root, *name.split("/"))
        os.makedirs(folder, exist_ok=True)
        base = np.zeros((32, 32)) + 40 + 170 * c / classes
        base[:, (c * 5) % 32] += 60
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 25, (32, 32)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.png"))
    return root


if __name__ == "__main__":
    sys.exit(main())
