"""The Evaluate tab's Save files… with a big evaluation: how long is the window frozen?

Builds an evaluation of --images test images x --classes classes (synthetic logits,
scored by the same bootstrap as ``olsdesk evaluate``, --resamples resamples), shows it
on an Evaluate tab, and saves it twice into a temporary folder while a 10 ms timer on the
GUI thread records how late each tick fires (bench/ui_latency.py's probe):

- baseline: ``write_evaluation`` with the figures, called on the GUI thread (what the
  button did before; today's writers, so only where it runs differs);
- the button now: ``EvaluationPanel.start_save`` (the figures drawn on the GUI thread,
  the tables written in a worker).

Prints each one's seconds and its worst stall. Goal: no stall over 50 ms beyond drawing
the figures, which Qt can only do on the GUI thread.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/save_evaluation.py [--images 74000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ui_latency import LatencyProbe, summary  # noqa: E402


def synthetic(n: int, k: int, resamples: int, names: list[str] | None = None):
    """An evaluation of n images x k classes (``names``, if given, sets k); with
    ``names``, a fifth of the images also lean towards a class of their own modality and
    anatomy, the kind of mistake a scan classifier makes."""
    from olsdesk.core.bootstrap import metric_samples
    from olsdesk.core.calibration import apply_temperature
    from olsdesk.core.evaluation import Evaluation

    rng = np.random.default_rng(0)
    k = len(names) if names is not None else k
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 2
    # right about 80 % of the time (165 classes' noise needs the larger margin)
    logits[np.arange(n), labels] += 4 if names is None else 7
    if names is not None:
        groups = [name.rsplit("/", 1)[0] for name in names]
        siblings = [[j for j, g in enumerate(groups) if g == groups[c] and j != c] or [c]
                    for c in range(k)]
        leaning = np.flatnonzero(rng.random(n) < 0.2)
        # a few favourite mistakes a class: the first sibling most often
        picked = [siblings[y][min(int(rng.exponential(1.0)), len(siblings[y]) - 1)]
                  for y in labels[leaning]]
        logits[leaning, picked] += 6.5
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    names = tuple(names) if names is not None else tuple(f"CT/abd/class{i:03d}" for i in range(k))
    temperature = 1.3
    raw = metric_samples(np.exp(log_probs), labels, resamples=resamples, seed=0)
    scaled = metric_samples(apply_temperature(log_probs, temperature), labels,
                            resamples=resamples, seed=0, per_class=False)
    sets = apply_temperature(log_probs, temperature) > 0.05
    ev = Evaluation(
        checkpoint="/runs/big/checkpoints/best.pt", epoch=1, class_names=names,
        source="synthetic", labels=labels, logits=logits.astype(np.float32), temperature=temperature,
        names=[f"/data/radimagenet/test/{names[y]}/img-{i:07d}.png"
               for i, y in enumerate(labels)],
        unreadable=[], raw=raw, scaled=scaled, resamples=resamples, seed=0, n_bins=15,
        max_logit=logits.max(axis=1), prediction_sets=sets)
    return ev.prepare()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=74_000)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--resamples", type=int, default=20)
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    from olsdesk.core.evaluation import write_evaluation
    from olsdesk.core.state import AppState, CheckpointRef
    from olsdesk.gui.app import wait_for
    from olsdesk.gui.figures import write_evaluation_figures
    from olsdesk.gui.panels.evaluation import EvaluationPanel

    app = QApplication.instance() or QApplication([])
    started = time.perf_counter()
    ev = synthetic(args.images, args.classes, args.resamples)
    print(f"{args.images:,} images x {args.classes} classes, {args.resamples} resamples "
          f"(built in {time.perf_counter() - started:.0f} s)")
    state = AppState()
    state.set_checkpoint(CheckpointRef(ev.checkpoint, ev.epoch))
    assert state.set_evaluation(ev)
    panel = EvaluationPanel(state)
    panel.resize(1400, 900)
    panel.show()
    app.processEvents()
    probe = LatencyProbe()
    with tempfile.TemporaryDirectory() as tmp:
        probe.start()
        wait_for(app, lambda: False, timeout=0.2)
        started = time.perf_counter()
        write_evaluation(ev, Path(tmp) / "baseline", write_evaluation_figures)
        old = time.perf_counter() - started
        wait_for(app, lambda: False, timeout=0.2)
        _, old_worst = summary("GUI thread", probe.stop())

        probe.start()
        wait_for(app, lambda: False, timeout=0.2)
        started = time.perf_counter()
        panel.start_save(Path(tmp) / "now")
        wait_for(app, lambda: panel._saving is None)
        new = time.perf_counter() - started
        wait_for(app, lambda: False, timeout=0.2)
        _, new_worst = summary("worker", probe.stop())
        same = sorted(p.name for p in (Path(tmp) / "now").iterdir()) == sorted(
            p.name for p in (Path(tmp) / "baseline").iterdir())
    print(f"Save files…  all on the GUI thread: {old:.2f} s, worst stall {old_worst:.0f} ms; "
          f"tables in a worker: {new:.2f} s, worst stall {new_worst:.0f} ms; "
          f"same files: {same}")
    print(f"  {panel.status.text()[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
