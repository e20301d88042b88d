"""Kill training with SIGKILL at random moments, continue it each time, and compare the
end with a run never interrupted: the reliability claim of docs/RELIABILITY.md.

Usage: python tools/kill_loop.py [--kills 5] [--epochs 20] [--seed 1] [--folder]

``--folder`` trains on the demo set written as PNG class folders, with two data-loader
processes (persistent workers, as file data gets by default), instead of in memory.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARGS = ["--demo-per-class", "20", "--image-size", "32", "--batch-size", "16", "--device", "cpu",
        "--workers", "0"]


def olsdesk(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "olsdesk", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folder", action="store_true",
                        help="PNG class folders and two loader workers")
    args = parser.parse_args()
    from olsdesk.core.runs import RunStore
    from olsdesk.errors import RunError

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        train_args = ARGS
        if args.folder:
            data = runs / "data"
            assert olsdesk("demo-data", "--out", str(data), "--per-class", "20").wait() == 0
            train_args = [a if a != "0" else "2" for a in ARGS]  # --workers 2
            train_args = ["--data", str(data), *train_args[2:]]
        straight = olsdesk("train", "--epochs", str(args.epochs), "--runs-dir", str(runs / "a"),
                           *train_args)
        started = time.monotonic()
        assert straight.wait() == 0, straight.stderr.read()
        per_run = time.monotonic() - started
        reference = RunStore.load(next((runs / "a").iterdir()))

        child = olsdesk("train", "--epochs", str(args.epochs), "--runs-dir", str(runs / "b"),
                        *train_args)
        kills, resumes, statuses = 0, 0, []
        while True:
            time.sleep(rng.uniform(0.15 * per_run, 0.4 * per_run))  # past start-up, mid-epoch
            if child.poll() is not None:
                break
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills += 1
            run = next(iter(sorted((runs / "b").glob("*"))), None)
            try:
                store = RunStore.open(run) if run else None
            except RunError:  # killed between creating the folder and writing run.json
                store = None
            statuses.append(store.status if store else "no run yet")
            if store is None or not store.checkpoint_path().exists():
                # killed before the first checkpoint: start again from nothing
                if run:
                    import shutil

                    shutil.rmtree(run)
                child = olsdesk("train", "--epochs", str(args.epochs), "--runs-dir",
                                str(runs / "b"), *train_args)
            else:
                resumes += 1
                child = olsdesk("train", "--resume", str(run))
            if kills >= args.kills:
                break
        assert child.wait() == 0, child.stderr.read()
        run = next((runs / "b").iterdir())
        final = RunStore.load(run)
        same = (len(final) == len(reference) and all(
            a.scalars()["val_top1"] == b.scalars()["val_top1"]
            and np.array_equal(a.soft_labels, b.soft_labels)
            and abs(a.train_loss - b.train_loss) <= 1e-6 * max(1.0, abs(b.train_loss))
            for a, b in zip(final, reference, strict=True)))
        leftovers = list(run.rglob(".*.tmp"))
        print(f"{kills} kills (status seen after each: {', '.join(statuses)}), {resumes} resumes; "
              f"{len(final)} epochs; final status {RunStore(run).status}; temp files left "
              f"{len(leftovers)}; every epoch's Top-1, train loss and soft labels identical to "
              f"the uninterrupted run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
