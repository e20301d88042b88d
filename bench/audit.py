"""The data audit at RadImageNet's class count: 165 classes x 3,000 files (495,000).

The tree is written once into ``--root`` (kept for the next run; about 2.7 GB): each file
is a PNG signature and 5.4 KB of random bytes (RadImageNet's PNGs are larger than the
4 KiB under which the audit decodes a file, so it hashes them and decodes none), plus a
few planted copies across splits and blank images. Split 70/15/15 by the usual
stratified split, as a run would.

Baseline, side by side on the same files: a bare loop hashing every file with hashlib in
one thread (what a user's script would do); the audit's ratio to it is printed. Both are
timed twice in alternation; the second pair runs from the page cache. With
``--drop-caches`` (root) the first pair starts from a cold cache.

    .venv/bin/python bench/audit.py [--classes 165] [--per-class 3000] [--root DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from olsdesk.config import RunConfig
from olsdesk.core.audit import audit_dataset
from olsdesk.core.data.sources import open_dataset

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_tree(root: Path, classes: int, per_class: int) -> None:
    marker = root / f".complete-{classes}x{per_class}"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        payload = rng.integers(0, 256, (per_class, 5400), dtype=np.uint8)
        for i in range(per_class):
            (folder / f"{i:05d}.png").write_bytes(SIGNATURE + payload[i].tobytes())
        if c % 20 == 0:
            print(f"  wrote {c + 1} of {classes} classes", flush=True)
    # planted: 50 real PNGs, each copied into another class, and 20 blank images
    for j in range(50):
        source = root / f"class{j % classes:03d}" / f"source{j:03d}.png"
        Image.fromarray(rng.integers(0, 256, (72, 72), dtype=np.uint8)).save(source)
        (root / f"class{(j * 7 + 1) % classes:03d}" / f"copy{j:03d}.png").write_bytes(
            source.read_bytes())
    for j in range(20):
        Image.fromarray(np.zeros((224, 224), np.uint8)).save(
            root / f"class{j % classes:03d}" / f"blank{j:02d}.png")
    marker.touch()


def bare_hash(paths: list[str]) -> int:
    """The baseline: every file hashed in one thread, nothing else."""
    seen = set()
    for path in paths:
        with open(path, "rb") as fh:
            seen.add(hashlib.file_digest(fh, "blake2b").digest())
    return len(seen)


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=165)
    parser.add_argument("--per-class", type=int, default=3000)
    parser.add_argument("--root", default="/tmp/olsdesk-audit-bench")
    parser.add_argument("--drop-caches", action="store_true")
    args = parser.parse_args()
    root = Path(args.root)
    print(f"tree: {args.classes} x {args.per_class} files in {root}", flush=True)
    started = time.perf_counter()
    write_tree(root, args.classes, args.per_class)
    print(f"  ready in {time.perf_counter() - started:.0f} s", flush=True)

    started = time.perf_counter()
    dataset = open_dataset(RunConfig(data=str(root), audit_data=False))
    scan = time.perf_counter() - started
    paths = [p for s in (dataset.train, dataset.val, dataset.test) for p in s.paths]
    print(f"opening the folder (scan and split, not audited): {scan:.1f} s for "
          f"{len(paths):,} files; {os.cpu_count()} cores", flush=True)
    for attempt in ("first", "second"):
        if attempt == "first" and args.drop_caches:
            drop_caches()
        started = time.perf_counter()
        bare_hash(paths)
        bare = time.perf_counter() - started
        if attempt == "first" and args.drop_caches:
            drop_caches()
        started = time.perf_counter()
        report = audit_dataset(dataset)
        audit = time.perf_counter() - started
        print(f"{attempt}: bare one-thread hash {bare:.1f} s, audit {audit:.1f} s "
              f"({len(paths) / audit:,.0f} files/s), ratio {audit / bare:.2f}", flush=True)
    print("found: " + " ".join(report.lines()))


if __name__ == "__main__":
    main()
