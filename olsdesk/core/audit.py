"""The data audit: what a dataset holds twice, holds empty, or cannot hold at all.

Public medical sets repeat themselves (RadImageNet stores the same file under two
pathologies, copies within a class and across anatomies, and many blank slices sharing
one hash). A copy of a test image in the training split inflates every number a run
reports, so ``audit_dataset`` looks before training:

- every file's bytes are hashed (BLAKE2b, 128 bits), streamed in 1 MiB reads by a pool
  of threads (hashing and file reads release the GIL); an in-memory image (demo,
  MedMNIST) is hashed from its pixels;
- files with the same hash are one *group*: within one class (a redundant copy), across
  classes (one image, two labels) or across splits (**the leak**: a validation or test
  image the model also trains on);
- a file that cannot be opened, is empty or does not start the way its format must
  (PNG, JPEG, TIFF, BMP, DICOM) is *unreadable*;
- a *constant* image (every pixel the same: a blank slice) is found by decoding. By
  default only the files that can be blank cheaply are decoded: one file of every
  duplicate group (blank slices share their bytes) and every file under
  ``SMALL_FILE`` bytes (a blank PNG or JPEG compresses to a few hundred bytes); with
  ``decode=True`` every file is decoded, which also finds truncated files.

Nothing here needs Qt: ``olsdesk audit``, the trainer (run.json's ``audit``) and the
app's data summary share it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from olsdesk.errors import ImageReadError, printable

SPLITS = ("train", "val", "test")
SMALL_FILE = 4096  # bytes: a file this small is decoded to see whether it is blank
DIGEST = 16  # bytes of BLAKE2b
CHUNK = 1 << 20  # bytes a read
TASK = 256  # files a thread's task
# threads hashing: from a cold disk 4 beat 1 (60,000 files: 7.3 s against 9.6 s); from the
# page cache one thread is fastest (2.0 s against 5.7 s: the GIL), but a million-file set
# is not in the page cache
WORKERS = 4
EXAMPLES = 20  # groups and files named in run.json and the report, of each kind
# what every readable file of a suffix starts with (DICOM: 'DICM' after 128 bytes, or
# any start for a .dcm file written without the preamble)
SIGNATURES = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",),
              ".jpeg": (b"\xff\xd8\xff",), ".tif": (b"II*\x00", b"MM\x00*"),
              ".tiff": (b"II*\x00", b"MM\x00*"), ".bmp": (b"BM",)}


@dataclass(frozen=True)
class Copy:
    """One file (or in-memory image) of a duplicate group."""

    split: str
    index: int  # position in its split
    label: str  # its class name
    name: str  # its path, or 'demo:12'


@dataclass(frozen=True)
class AuditReport:
    """What ``audit_dataset`` found. Counts are of files; a group is a set of files with
    identical content."""

    files: dict[str, int]  # split -> files audited
    within_class: list[list[Copy]]  # groups in one class and one split
    across_classes: list[list[Copy]]  # groups whose files carry two or more labels
    across_splits: list[list[Copy]]  # groups in two or more splits: the leak
    constant: list[Copy]  # blank images
    unreadable: list[tuple[Copy, str]]  # with the sentence why
    decoded: str  # "all" or "candidates": which files were decoded for blankness
    complete: bool = True  # False when stopped before every file was hashed
    leaked: dict[str, np.ndarray] = field(default_factory=dict)  # split -> indices whose
    # content is also in an earlier split (val: in train; test: in train or val)

    @property
    def total(self) -> int:
        return sum(self.files.values())

    @property
    def redundant(self) -> int:
        """Files that are a copy of another in the same class and split."""
        return sum(len(g) - 1 for g in self.within_class)

    @property
    def leak_count(self) -> int:
        return sum(len(v) for v in self.leaked.values())

    @property
    def clean(self) -> bool:
        return not (self.within_class or self.across_classes or self.across_splits
                    or self.constant or self.unreadable)

    def lines(self) -> list[str]:
        """The findings in plain sentences, the leak first (it changes every number)."""
        if not self.complete:
            head = [f"The audit was stopped after {self.total:,} files; what it found so far:"]
        else:
            head = []
        out = []
        if self.across_splits:
            parts = ", ".join(f"{len(v):,} {split}" for split, v in self.leaked.items() if len(v))
            out.append(f"{len(self.across_splits):,} image(s) appear in more than one split: "
                       f"{parts} image(s) are copies of an image in an earlier split (a leak "
                       "that inflates validation and test numbers; --drop-duplicates, in the "
                       "app Drop leaked copies, removes them).")
        if self.across_classes:
            out.append(f"{len(self.across_classes):,} image(s) carry two or more labels "
                       "(the same file in different classes).")
        if self.within_class:
            out.append(f"{self.redundant:,} file(s) repeat another file of their class "
                       f"({len(self.within_class):,} group(s) of identical files).")
        if self.constant:
            how = ("" if self.decoded == "all" else
                   " (among the files decoded: duplicates and files under "
                   f"{SMALL_FILE:,} bytes; --decode looks at every file)")
            out.append(f"{len(self.constant):,} image(s) are constant: every pixel the "
                       f"same{how}.")
        if self.unreadable:
            out.append(f"{len(self.unreadable):,} file(s) cannot be read, e.g. "
                       f"{self.unreadable[0][1]}")
        if not out:
            out.append(f"No duplicates, constant images or unreadable files among "
                       f"{self.total:,} images.")
        return head + out

    def to_dict(self) -> dict:
        """run.json's ``audit``: the counts, and the first groups and files of each kind."""
        def group(g: list[Copy]) -> list[dict]:
            return [{"split": c.split, "class": c.label, "file": c.name} for c in g]

        return {
            "files": dict(self.files), "complete": self.complete, "decoded": self.decoded,
            "duplicate_groups_within_class": len(self.within_class),
            "redundant_files": self.redundant,
            "groups_across_classes": len(self.across_classes),
            "groups_across_splits": len(self.across_splits),
            "leaked": {split: len(v) for split, v in self.leaked.items()},
            "constant_images": len(self.constant),
            "unreadable_files": len(self.unreadable),
            "examples": {
                "across_splits": [group(g) for g in self.across_splits[:EXAMPLES]],
                "across_classes": [group(g) for g in self.across_classes[:EXAMPLES]],
                "within_class": [group(g) for g in self.within_class[:EXAMPLES]],
                "constant": [c.name for c in self.constant[:EXAMPLES]],
                "unreadable": [why for _, why in self.unreadable[:EXAMPLES]],
            },
            "summary": self.lines(),
        }


def _signature_problem(path: Path, head: bytes) -> str | None:
    """A sentence when the file does not start as its suffix says it must."""
    wanted = SIGNATURES.get(path.suffix.lower())
    if wanted is None or any(head.startswith(w) for w in wanted):
        return None
    return (f"{printable(path.name)} does not start as a {path.suffix.lower()[1:].upper()} "
            "file must (a renamed or damaged file).")


def hash_file(path: str | Path) -> tuple[bytes, int]:
    """(BLAKE2b digest, size in bytes) of a readable image file, streamed in one open;
    ImageReadError with the sentence for a file that cannot be opened, is not a regular
    file, is empty or starts wrong. Opened non-blocking: a FIFO named x.png never hangs."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        fd = None
    if fd is None:
        _explain(path)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            _explain(path)
        try:
            head = fh.read(CHUNK)
            problem = _signature_problem(path, head)
            if problem:
                raise ImageReadError(problem)
            digest = hashlib.blake2b(head, digest_size=DIGEST)
            size = len(head)
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except OSError as exc:
            raise ImageReadError(f"{printable(path.name)} cannot be read "
                                 f"({exc.strerror}).") from None
    return digest.digest(), size


def _explain(path: Path) -> None:
    """Raise the one sentence saying why ``path`` cannot be read (the image reader's)."""
    from olsdesk.core.data.images import _check_file

    _check_file(path)  # raises for every reason hash_file turns to it for
    raise ImageReadError(f"{printable(path.name)} cannot be read.")


def _hash_chunk(paths: list[str]) -> list[tuple[bytes, int] | str]:
    """hash_file of each path, or its sentence (one task for a thread: a future per file
    costs more than hashing a small one)."""
    out: list[tuple[bytes, int] | str] = []
    for path in paths:
        try:
            out.append(hash_file(path))
        except ImageReadError as exc:
            out.append(str(exc))
    return out


def _is_constant_file(path: str) -> bool | str:
    """True when every pixel is the same; the sentence when the file cannot be decoded."""
    from olsdesk.core.data.images import read_image

    try:
        image = read_image(path, 32)
    except ImageReadError as exc:
        return str(exc)
    return bool(image.size) and float(image.max()) == float(image.min())


def _splits_of(dataset) -> list[tuple[str, object]]:
    return [(name, s) for name, s in zip(SPLITS, (dataset.train, dataset.val, dataset.test),
                                         strict=True) if s is not None]


def audit_dataset(dataset, decode: bool = False, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  stop: threading.Event | None = None) -> AuditReport:
    """Hash every file of ``dataset``'s splits (a ``sources.Dataset``) and report
    duplicates, leaks, constant images and unreadable files. ``progress(done, total)`` is
    called every few hundred files; ``stop`` set ends it early (``complete`` False)."""
    splits = _splits_of(dataset)
    names = dataset.class_names
    copies: list[Copy] = []
    for split, samples in splits:
        copies += [Copy(split, i, names[int(label)], samples.describe(i))
                   for i, label in enumerate(samples.labels)]
    total = len(copies)
    digests = np.zeros(total, dtype=f"S{DIGEST}")
    sizes = np.zeros(total, dtype=np.int64)
    constant = np.zeros(total, dtype=bool)
    hashed = np.zeros(total, dtype=bool)
    unreadable: list[tuple[Copy, str]] = []
    paths: list[str | None] = [None] * total
    start = 0
    for _, samples in splits:
        n = len(samples)
        if hasattr(samples, "paths"):
            paths[start:start + n] = samples.paths
        else:  # in-memory images: their pixels, all at once
            flat = samples.images.reshape(n, -1)
            digests[start:start + n] = [hashlib.blake2b(row.tobytes(), digest_size=DIGEST)
                                        .digest() for row in flat]
            constant[start:start + n] = flat.min(axis=1) == flat.max(axis=1)
            hashed[start:start + n] = True
        start += n
    files = [i for i, p in enumerate(paths) if p is not None]
    done = total - len(files)
    workers = workers or WORKERS

    stopped = False
    tasks = [files[at:at + TASK] for at in range(0, len(files), TASK)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for wave in range(0, len(tasks), workers * 4):  # a few tasks a thread at a time
            if stop is not None and stop.is_set():
                stopped = True
                break
            chunk = tasks[wave:wave + workers * 4]
            for indices, results in zip(chunk, pool.map(
                    _hash_chunk, [[paths[i] for i in t] for t in chunk]), strict=True):
                for i, result in zip(indices, results, strict=True):
                    if isinstance(result, str):
                        unreadable.append((copies[i], result))
                    else:
                        digests[i], sizes[i] = result
                        hashed[i] = True
                done += len(indices)
            if progress is not None:
                progress(done, total)
    if progress is not None and not stopped:
        progress(total, total)

    # groups of identical content, among the files that were hashed
    at = np.flatnonzero(hashed)
    _, inverse, counts = np.unique(digests[at], return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts > 1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    groups = [at[order[bounds[g]:bounds[g + 1]]] for g in repeated]

    # blank images: decoded where they can be (one file a group stands for the group)
    candidates = [i for i in files if hashed[i] and (decode or sizes[i] < SMALL_FILE)]
    candidates += [g[0] for g in groups if paths[g[0]] is not None and sizes[g[0]] >= SMALL_FILE
                   and not decode]
    if candidates and not stopped:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, verdict in zip(candidates, pool.map(lambda i: _is_constant_file(paths[i]),
                                                       candidates), strict=True):
                if isinstance(verdict, str):
                    unreadable.append((copies[i], verdict))
                    hashed[i] = False
                else:
                    constant[i] = verdict
    for g in groups:  # a group is blank when the file standing for it is
        constant[g] = constant[g[0]]

    within, across_classes, across_splits = [], [], []
    order_of = {split: n for n, split in enumerate(SPLITS)}
    leaked: dict[str, list[int]] = {split: [] for split, _ in splits if split != "train"}
    for g in groups:
        members = [copies[i] for i in g]
        kinds = {c.split for c in members}
        if len({c.label for c in members}) > 1:
            across_classes.append(members)
        if len(kinds) > 1:
            across_splits.append(members)
            first = min(order_of[s] for s in kinds)
            for c in members:
                if order_of[c.split] > first:
                    leaked[c.split].append(c.index)
        elif len({c.label for c in members}) == 1:
            within.append(members)
    counts_by_split = {split: len(samples) for split, samples in splits}
    return AuditReport(
        files=counts_by_split, within_class=within, across_classes=across_classes,
        across_splits=across_splits, constant=[copies[i] for i in np.flatnonzero(constant)],
        unreadable=unreadable, decoded="all" if decode else "candidates",
        complete=not stopped,
        leaked={split: np.array(sorted(set(v)), dtype=np.int64) for split, v in leaked.items()})


def drop_leaked(dataset, report: AuditReport):
    """``dataset`` without the validation and test images whose content is also in an
    earlier split (the setting ``drop_duplicates``); the same dataset when none leak."""
    from dataclasses import replace

    changes = {}
    for split in ("val", "test"):
        samples = getattr(dataset, split)
        drop = report.leaked.get(split)
        if samples is None or drop is None or not len(drop):
            continue
        keep = np.setdiff1d(np.arange(len(samples)), drop)
        changes[split] = samples.subset(keep)
    if not changes:
        return dataset
    dropped = ", ".join(f"{len(report.leaked[s]):,} {s}" for s in changes)
    return replace(dataset, **changes, warnings=dataset.warnings + (
        f"dropped {dropped} image(s) whose content is also in an earlier split "
        "(drop_duplicates).",))

