"""How long does olsdesk take to quit when idle?

A child process opens the real window (offscreen, the demo data loaded), waits until it
is idle, then closes it the way File → Quit does and prints the moment it did; the parent
times from that moment until the child has exited (the window's close, the event loop's
return and the interpreter's teardown). The baseline, in the same run: a child that
imports the same libraries (PyTorch, PySide6, pyqtgraph, olsdesk's window module), makes
a QApplication and exits, timed from its last line to its exit. Prints both, the median
of the rounds, and the ratio. Not a test.

Usage: python bench/quit_time.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

WINDOW = r"""
import sys, tempfile, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv)
from olsdesk.gui.app import isolated_window, wait_for
tmp = tempfile.mkdtemp()
window = isolated_window(tmp, 1)
window.show()
wait_for(app, lambda: window.experiment.dataset is not None)
end = time.monotonic() + 1.0
wait_for(app, lambda: time.monotonic() >= end)
def quit_now():
    print(f"CLOSE {time.time():.6f}", flush=True)
    window.close()
    app.quit()
QTimer.singleShot(0, quit_now)
sys.exit(app.exec())  # as `olsdesk` ends
"""

BARE = r"""
import sys, time
import torch, pyqtgraph
from PySide6.QtWidgets import QApplication
import olsdesk.gui.main_window
app = QApplication(sys.argv)
print(f"CLOSE {time.time():.6f}", flush=True)
"""


def timed(script: str) -> float:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)
    closed = None
    for line in child.stdout:
        if line.startswith("CLOSE "):
            closed = float(line.split()[1])
    child.wait()
    ended = time.time()
    if closed is None:
        raise SystemExit(f"the child never reached its close (exit status {child.returncode})")
    return ended - closed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    window, bare = [], []
    for _ in range(args.rounds):  # alternating, so drift in the machine's load hits both
        window.append(timed(WINDOW))
        bare.append(timed(BARE))
    w, b = statistics.median(window), statistics.median(bare)
    print(f"quit when idle: window {w:.2f} s (rounds {', '.join(f'{x:.2f}' for x in window)}); "
          f"bare interpreter exit with the same imports {b:.2f} s "
          f"({', '.join(f'{x:.2f}' for x in bare)}); ratio {w / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
