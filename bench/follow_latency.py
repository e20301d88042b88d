"""Does the window stay responsive while it follows a long run on disk?

Builds a run of 100 epochs x 165 classes (RadImageNet's count; 2,000 embedded validation
images an epoch) from a real one-epoch demo run, marks it as training, and lets a writer
thread complete an epoch every ``--every`` seconds (its line in metrics.jsonl; the arrays
are written beforehand, as another process would) while the window follows it. A 10 ms QTimer
on the GUI thread records how late each tick fires, in two phases of the same run:

- baseline: how the app followed a run before, every 2 s ``RunStore.load_reports()``
  (the whole run) on the GUI thread, its new epochs handed to the session;
- now: ``File → Open run…``, the session's ``RunFollower`` in a worker (new epochs only).

Prints each phase's worst stall and p95, the ratio, and the time one read takes either
way. Not a test: timings never fail a build.

Usage: QT_QPA_PLATFORM=offscreen python bench/follow_latency.py [--epochs 100]
       [--classes 165] [--seconds 12] [--every 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from ui_latency import LatencyProbe, summary  # noqa: E402


def synthetic_report(template, epoch: int, k: int, m: int, rng) -> object:
    """``template``'s scalars for ``epoch`` with arrays of a k-class run."""
    soft = rng.dirichlet(np.full(k, 0.05), size=k)
    bins = len(template.reliability_counts)
    return dataclasses.replace(
        template, epoch=epoch, val_top1=0.5 + 0.4 * epoch / (epoch + 10),
        soft_labels=soft, mean_prediction=soft, soft_label_counts=rng.integers(0, 50, k),
        reliability_counts=rng.integers(0, 200, bins),
        reliability_accuracy=rng.random(bins), reliability_confidence=rng.random(bins),
        confidence_histogram=rng.integers(0, 200, bins),
        embedding=rng.normal(size=(m, 2)).astype(np.float32),
        embedding_indices=np.arange(m), embedding_labels=rng.integers(0, k, m),
        embedding_predictions=rng.integers(0, k, m),
        embedding_confidences=rng.random(m).astype(np.float32),
        class_names=tuple(f"XX/organ{c // 10}/finding{c}" for c in range(k)))


def build_run(folder: Path, epochs: int, k: int, m: int):
    from olsdesk.config import RunConfig
    from olsdesk.core.runs import RunStore
    from olsdesk.core.trainer import Trainer

    trainer = Trainer(RunConfig(demo_per_class=4, image_size=32, batch_size=16, epochs=1,
                                device="cpu"), runs_dir=folder)
    template = [r for r in trainer.fit() if hasattr(r, "soft_labels")][-1]
    store = RunStore(trainer.store.path)
    names = tuple(f"XX/organ{c // 10}/finding{c}" for c in range(k))
    store.write_info(dataclasses.replace(store.info(), class_names=names, status="training"))
    (store.path / "metrics.jsonl").unlink()
    rng = np.random.default_rng(0)
    reports = [synthetic_report(template, e, k, m, rng) for e in range(1, epochs + 1)]
    return store, reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args()

    from olsdesk.core.runs import RunFollower, RunStore
    from olsdesk.gui.app import isolated_window, wait_for

    app = QApplication.instance() or QApplication(sys.argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="olsdesk-follow-") as tmp:
        for phase in ("baseline", "now"):
            store, reports = build_run(Path(tmp) / phase, args.epochs, args.classes,
                                       args.points)
            arriving = max(2, int(args.seconds / args.every))
            # every epoch's arrays are written now; an epoch "arrives" with its line in
            # metrics.jsonl (what makes it complete), so the writer, standing in for the
            # training process, costs this process nothing
            for report in reports:
                store.write_epoch(report)
            metrics = store.path / "metrics.jsonl"
            lines = metrics.read_text().splitlines(keepends=True)
            metrics.write_text("".join(lines[:-arriving]))
            lock = store.lock()  # held as the training process holds it
            window = isolated_window(str(Path(tmp) / f"app-{phase}"))
            window.resize(1320, 860)
            window.show()
            wait_for(app, lambda w=window: w.experiment.dataset is not None, 120)
            timer = None
            if phase == "baseline":  # the old way, on the GUI thread
                session = window.session
                session.begin(type("Started", (), {"path": store.path,
                                                   "info": store.info()})())
                for report in store.load_reports():
                    session.add_report(report)

                def poll(session=session, store=store):
                    for report in store.load_reports()[len(session.reports):]:
                        session.add_report(report)

                timer = QTimer()
                timer.setInterval(2000)
                timer.timeout.connect(poll)
                timer.start()
            else:
                window.open_run(store.path)
                wait_for(app, lambda w=window: not w.session.loading, 120)
            total = len(reports)
            wait_for(app, lambda w=window, n=total - arriving: len(w.reports) == n, 120)

            def write(metrics=metrics, rest=lines[-arriving:]):
                for line in rest:
                    time.sleep(args.every)
                    with open(metrics, "a", encoding="utf-8") as fh:
                        fh.write(line)

            writer = threading.Thread(target=write)
            probe = LatencyProbe()
            probe.start()
            writer.start()
            wait_for(app, lambda w=window, t=writer, n=total: not t.is_alive()
                     and len(w.reports) == n, args.seconds * 4 + 60)
            late = probe.stop()
            if timer is not None:
                timer.stop()
            results[phase] = summary(phase, late)
            lock.release()
            window.close()
            app.processEvents()
        # one read of the whole run, against the follower's read of one new epoch
        store = RunStore(Path(tmp) / "now" / store.path.name)
        started = time.perf_counter()
        whole = store.load_reports()
        whole_s = time.perf_counter() - started
        follower = RunFollower(store)
        follower._offset = sum(len(line) for line in open(store.path / "metrics.jsonl", "rb")
                               .readlines()[:-1])
        started = time.perf_counter()
        one = follower.read(with_status=False).reports
        one_s = time.perf_counter() - started
    print(f"a poll reads: the whole run ({len(whole)} epochs) {whole_s * 1000:.0f} ms "
          f"before, now the new epoch ({len(one)}) {one_s * 1000:.1f} ms, off the GUI thread")
    (_, worst_before), (_, worst_now) = results["baseline"], results["now"]
    print(f"worst GUI stall while following {args.epochs} epochs x {args.classes} classes: "
          f"{worst_now:.1f} ms now vs {worst_before:.1f} ms before "
          f"(ratio {worst_now / max(worst_before, 1e-9):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
