"""``olsdesk evaluate``'s memory at RadImageNet's test size: 200,000 images x 165 classes.

Trains a small model on a 165-class folder (bench/ui_latency.py's, RadImageNet's class
names, 1 epoch: only its output size matters), then evaluates it on --images in-memory
32 px test images through ``iter_evaluate`` (the same code as the CLI, less opening
files) and writes its files, while a thread samples this process's resident memory every
20 ms. Printed: the peak above the memory before evaluating (the model and torch are
loaded by then), against the baseline of one N x K float64 matrix (what the numbers
themselves take), and where the peak falls (predicting, scoring, writing).

    .venv/bin/python bench/evaluate_memory.py [--images 200000] [--resamples 1000]
                                              [--explain]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The largest resident memory seen, and in which phase, every ``every`` seconds."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.phase, self.peak = every, "start", {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = resident_mb()
            if mb > self.peak.get(self.phase, 0.0):
                self.peak[self.phase] = mb
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--explain", action="store_true",
                        help="split the scoring's peak by bootstrap (raw, scaled, each "
                             "recalibrator) and what runs between them")
    args = parser.parse_args()

    from ui_latency import class_folder

    from olsdesk.config import RunConfig
    from olsdesk.core import evaluation
    from olsdesk.core.data.sources import ArraySamples
    from olsdesk.core.evaluation import (
        Evaluation,
        EvaluationProgress,
        iter_evaluate,
        write_evaluation,
    )
    from olsdesk.core.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        data = class_folder(os.path.join(tmp, "data"), 165, 12)
        trainer = Trainer(RunConfig(data=data, image_size=32, epochs=1, device="cpu",
                                    num_workers=0), runs_dir=os.path.join(tmp, "runs"))
        for _ in trainer.fit():
            pass
        best = trainer.store.checkpoint_path("best.pt")
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 165, args.images)
        images = rng.integers(0, 255, (args.images, 32, 32), dtype=np.uint8)
        test = (ArraySamples(images, labels, "test"), "synthetic")
        k = 165
        baseline = args.images * k * 8 / 2**20
        before = resident_mb()
        started = time.perf_counter()
        with Sampler() as sampler:
            if args.explain:
                scored = evaluation.metric_samples
                names = iter(("raw", "scaled", *(f"recalibrator {i}" for i in range(1, 9))))

                def metric_samples(*a, **kw):
                    sampler.phase = f"score: {next(names)}"
                    try:
                        return scored(*a, **kw)
                    finally:
                        sampler.phase = "score: between"

                evaluation.metric_samples = metric_samples
            sampler.phase = "predict"
            ev = None
            for item in iter_evaluate(best, test=test, device="cpu", resamples=args.resamples,
                                      workers=0, batch_size=256):
                if isinstance(item, EvaluationProgress) and item.phase == "bootstrap":
                    sampler.phase = "score"
                elif isinstance(item, Evaluation):
                    ev = item
            sampler.phase = "prepare"
            ev.prepare()
            sampler.phase = "write"
            write_evaluation(ev, os.path.join(tmp, "out"))
        took = time.perf_counter() - started
    peak = max(sampler.peak.values())
    print(f"evaluate on {args.images:,} in-memory images x {k} classes, {args.resamples} "
          f"resamples: {took:.0f} s; resident before {before:,.0f} MB")
    print(f"  peak above that: {peak - before:,.0f} MB; one N x K float64 matrix (baseline) "
          f"{baseline:,.0f} MB: {(peak - before) / baseline:.1f}x")
    for phase, mb in sampler.peak.items():
        print(f"  {phase:16s} peak {mb - before:8,.0f} MB above the start")


if __name__ == "__main__":
    main()
