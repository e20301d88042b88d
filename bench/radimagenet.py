"""olsdesk on a tree of RadImageNet's shape: 165 classes in nested modality/anatomy/finding
folders (CT 28, MR 107, US 30 classes), ``--per-class`` files each (3,000 by default:
495,000 files; 8,200 gives RadImageNet's 1.35 M).

The tree is written once into ``--root`` and kept for the next run. Its files are PNG
signatures with a few bytes after them: nothing here decodes an image, and a real PNG a
file would only make the tree slower to write. Every figure is printed beside a baseline
measured in the same run:

- opening the data: ``scan_folder`` (and all of ``open_dataset`` without the audit)
  against torchvision's ImageFolder scan of the same root (``make_dataset``: one
  ``os.walk`` and a suffix test a file) and against olsdesk 0.3's scan (``os.walk``
  with two pathlib objects a file), alternated, medians of 3;
- loader workers: the private memory a forked worker has after reading every training
  path once (what a DataLoader's ``__getitem__`` does with a path), with the paths as
  ``FileSamples`` holds them against a Python list of str (0.3).

The other RadImageNet-size figures have their own scripts: bench/epoch_end.py (the epoch
end at 135,000 x 165), bench/run_files.py (run.json at 1.35 M names),
bench/predict_drop.py (20,000 files dropped on Predict) and bench/audit.py (the audit).

    .venv/bin/python bench/radimagenet.py [--per-class 3000] [--root DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import numpy as np

from olsdesk.core.data.sources import FileSamples, scan_folder

SIGNATURE = b"\x89PNG\r\n\x1a\n"

# modality -> anatomy -> findings: RadImageNet's layout and counts (28 + 107 + 30 classes);
# the names are of its kind, not its exact list.
ANATOMY = {
    "CT": {"abd": 10, "lung": 10, "chest": 8},
    "MR": {"af": 12, "knee": 16, "shoulder": 14, "spine": 14, "hip": 12, "brain": 12,
           "abd": 15, "pelvis": 12},
    "US": {"abd": 8, "thyroid": 4, "ovary": 5, "kidney": 5, "liver": 4, "spleen": 4},
}
FINDINGS = ("normal", "cyst", "edema", "effusion", "fracture", "tear", "mass", "nodule",
            "hemorrhage", "inflammation", "degenerative_change", "fluid_collection",
            "soft_tissue_lesion", "bone_marrow_edema", "postoperative_change", "atelectasis",
            "pneumonia", "fibrosis", "calcification", "infarct", "hematoma", "lipoma")


def class_names() -> list[str]:
    """165 class paths of RadImageNet's shape, e.g. ``MR/knee/bone_marrow_edema``."""
    names = []
    for modality, anatomies in ANATOMY.items():
        for anatomy, count in anatomies.items():
            names += [f"{modality}/{anatomy}/{FINDINGS[i]}" for i in range(count)]
    assert len(names) == 165
    return names


def write_tree(root: Path, per_class: int) -> None:
    marker = root / f".complete-165x{per_class}"
    if marker.exists():
        return
    started = time.perf_counter()
    for c, name in enumerate(class_names()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        prefix = name.replace("/", "-").lower()
        for i in range(per_class):
            with open(folder / f"{prefix}{i:06d}.png", "wb") as fh:
                fh.write(SIGNATURE)
        if c % 40 == 0:
            print(f"  wrote {c + 1} of 165 classes", flush=True)
    marker.touch()
    print(f"  tree written in {time.perf_counter() - started:.0f} s", flush=True)


def imagefolder_scan(root: Path) -> int:
    """torchvision's ImageFolder scan of the root: its classes are the top folders, and
    ``make_dataset`` walks everything below each with a suffix test a file."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    _, index = find_classes(str(root))
    return len(make_dataset(str(root), index, extensions=IMG_EXTENSIONS))


def scan_03(root: Path) -> int:
    """olsdesk 0.3's scan: os.walk, and Path objects for every file."""
    from olsdesk.core.data.images import IMAGE_SUFFIXES, is_dicom

    paths = []
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here == root:
            continue
        for name in sorted(filenames):
            suffix = (here / name).suffix.lower()
            if not name.startswith(".") and (suffix in IMAGE_SUFFIXES
                                             or (suffix == "" and is_dicom(here / name))):
                paths.append(str(here / name))
    return len(paths)


def timed(fn, root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    found = fn(root)
    return time.perf_counter() - started, found


def private_mb() -> float:
    """This process's private memory (what copy-on-write has copied), from smaps."""
    fields = Path("/proc/self/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in fields
               if line.startswith(("Private_Clean", "Private_Dirty"))) / 1024


def _worker(paths, reads: int, out) -> None:
    before = private_mb()
    total = 0
    for i in range(reads):
        total += len(paths[i])  # what __getitem__ does with the path before opening it
    out.send((before, private_mb(), total))


def worker_memory(paths) -> tuple[float, float]:
    """A forked worker's private memory before and after reading every path once."""
    reading, writing = multiprocessing.Pipe(duplex=False)
    worker = multiprocessing.get_context("fork").Process(
        target=_worker, args=(paths, len(paths), writing))
    worker.start()
    before, after, _ = reading.recv()
    worker.join()
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=3000)
    parser.add_argument("--root", default="/tmp/olsdesk-radimagenet-bench")
    args = parser.parse_args()
    root = Path(args.root)
    write_tree(root, args.per_class)
    files = 165 * args.per_class
    print(f"{files:,} files in 165 nested class folders under {root}")

    seconds = {"olsdesk scan_folder": [], "ImageFolder scan": [], "olsdesk 0.3 scan": []}
    for _ in range(3):
        for name, fn in (("olsdesk scan_folder", lambda r: len(scan_folder(r)[0])),
                         ("ImageFolder scan", imagefolder_scan),
                         ("olsdesk 0.3 scan", scan_03)):
            took, found = timed(fn, root)
            assert found == files, (name, found)
            seconds[name].append(took)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    print("\nopening the data (median of 3, alternated)")
    for name, value in median.items():
        print(f"  {name:<22} {value:6.2f} s  {value / files * 1e6:5.2f} us a file  "
              f"{value / median['ImageFolder scan']:.2f}x ImageFolder")

    from olsdesk.config import RunConfig
    from olsdesk.core.data.sources import open_dataset

    started = time.perf_counter()
    data = open_dataset(RunConfig(data=str(root), audit_data=False))
    took = time.perf_counter() - started
    print(f"  {'open_dataset, whole':<22} {took:6.2f} s  (scan, labels, 70/15/15 split, "
          f"packed paths; {took / median['ImageFolder scan']:.2f}x ImageFolder's scan)")

    # evaluate's run's own test split: from the run's record, against opening the data
    # and re-splitting it by the record (what it did before), the same files either way
    from olsdesk.core.data.sources import keep_recorded_split, recorded_files, sample_names

    train, val, test = (sample_names(s) for s in (data.train, data.val, data.test))
    started = time.perf_counter()
    again = open_dataset(RunConfig(data=str(root), audit_data=False))
    kept, _ = keep_recorded_split(again, train, val, test)
    rescan = time.perf_counter() - started
    started = time.perf_counter()
    found, gone = recorded_files(root, test, data.class_names)
    record = time.perf_counter() - started
    assert not gone and tuple(found.paths) == tuple(kept.test.paths)
    assert found.labels.tolist() == kept.test.labels.tolist()
    print(f"\nevaluate, the run's own {len(test):,} test files: opened from its record "
          f"{record:.2f} s, by opening the data again {rescan:.2f} s "
          f"({rescan / record:.1f}x); the same files and labels")
    del data, again, kept, found

    paths, classes, _ = scan_folder(root)
    labels = np.zeros(len(paths), np.int64)
    train = FileSamples(paths, labels).subset(np.arange(int(len(paths) * 0.7)))
    as_list = list(train.paths)
    del paths, classes
    print(f"\nloader worker, private memory after reading {len(as_list):,} training paths")
    for name, held in (("olsdesk FileSamples.paths", train.paths),
                       ("Python list of str (0.3)", as_list)):
        before, after = worker_memory(held)
        print(f"  {name:<26} {before:7.1f} MB -> {after:7.1f} MB  (+{after - before:.1f} MB)")


if __name__ == "__main__":
    main()
