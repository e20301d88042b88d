"""A run's records at RadImageNet's size: 1.35 M files split 70/15/15 (945,000 training,
202,500 validation and 202,500 test names, paths as RadImageNet's folders give them).

Baseline, side by side: run.json as olsdesk 0.3 wrote it (the held-out names inside it,
rewritten at every status change). Printed: the bytes of run.json and split.json.gz, and
the seconds of a status change, of reading run.json (what the Compare tab and a follower
do every 2 s) and of reading the names (what opening a run in the app does).

    .venv/bin/python bench/run_files.py [--files 1350000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from olsdesk.config import RunConfig
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.records import DatasetSummary, RunInfo
from olsdesk.core.runs import SPLIT, TRAIN_NAMES, RunStore, atomic_write_bytes


def names(n: int, split: str) -> list[str]:
    return [f"/data/radimagenet/RadiologyAI_{split}/CT/abd/normal/ct-abd-normal-{i:07d}.png"
            for i in range(n)]


def timed(fn, rounds: int = 3) -> float:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_350_000)
    args = parser.parse_args()
    n_val = n_test = int(args.files * 0.15)
    train = names(args.files - n_val - n_test, "train")
    classes = tuple(f"CT/abd/class{i:03d}" for i in range(165))
    info = RunInfo(classes, Preprocessing(),
                   DatasetSummary("/data/radimagenet", "folder", 1, len(train), n_val,
                                  {c: (5727, 1227, 1227) for c in classes}, n_test),
                   validation_names=tuple(names(n_val, "val")),
                   test_names=tuple(names(n_test, "test")))
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(tmp, RunConfig(), info, name="run", train_names=train)
        old = Path(tmp) / "old"
        old.mkdir()
        old_dict = {**info.to_dict(), "format": 1,
                    "validation_names": list(info.validation_names),
                    "test_names": list(info.test_names)}

        def old_status() -> None:  # 0.3: read the whole run.json, rewrite it
            data = json.loads((old / "run.json").read_text())
            data["status"] = "training"
            atomic_write_bytes(old / "run.json", json.dumps(data, indent=2).encode())

        atomic_write_bytes(old / "run.json", json.dumps(old_dict, indent=2).encode())
        rows = [
            ("run.json bytes", (old / "run.json").stat().st_size,
             (store.path / "run.json").stat().st_size),
            ("status change, s", timed(old_status), timed(lambda: store.set_status("training"))),
            ("read run.json, s", timed(lambda: json.loads((old / "run.json").read_text())),
             timed(store.info)),
            ("read the names, s", timed(lambda: json.loads((old / "run.json").read_text())),
             timed(lambda: store.info(names=True))),
        ]
        split_bytes = (store.path / SPLIT).stat().st_size
        train_bytes = (store.path / TRAIN_NAMES).stat().st_size
    print(f"{args.files:,} files: {len(train):,} training, {n_val:,} validation, "
          f"{n_test:,} test names; split.json.gz {split_bytes / 1e6:.1f} MB, "
          f"train_names.json.gz {train_bytes / 1e6:.1f} MB")
    print(f"  {'':20s} {'0.3 (baseline)':>15s} {'now':>12s} {'ratio':>8s}")
    for what, before, after in rows:
        print(f"  {what:20s} {before:15,.3f} {after:12,.3f} {after / before:8.4f}")


if __name__ == "__main__":
    main()
