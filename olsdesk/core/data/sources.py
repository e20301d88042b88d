"""Datasets users bring, opened into one shape: ``Dataset`` with train, validation and
test samples.

- the demo set (``"demo"``), generated in memory;
- an image folder, torchvision's ImageFolder layout or RadImageNet's nested one, where
  a class is the leaf folder's path relative to the root (``CT/lung/normal``), with
  optional split CSVs (``filename,label``; train, val and test);
- a MedMNIST ``.npz`` archive (its train, val and test arrays).

Data without a split of its own is split here, stratified and seeded: the split is a
function of the sorted file list, the fractions and the split seed (all in the run's
configuration), so a resumed run and its evaluation see the same images. Training uses
train; model selection and the temperature use val; only evaluation reads test. An
external test folder (``test_data``) replaces the held-out test split.

Samples are read lazily; a file that cannot be read is skipped at load time by the
trainer and named in the run's log. Mistakes a user can make (no such folder, a single
class, no images) raise ``DataError`` with one sentence.
"""

from __future__ import annotations

import csv
import operator
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from olsdesk.core.data.images import IMAGE_SUFFIXES, ImageReadError, is_dicom, read_image
from olsdesk.errors import DataError, printable

if TYPE_CHECKING:
    from olsdesk.config import RunConfig
    from olsdesk.core.audit import AuditReport
    from olsdesk.core.data.transforms import Preprocessing

DEMO = "demo"


def data_kind(data: str, split_csv: str | None = None) -> str:
    """What a data setting is, by its shape (the app's data menu and every reader agree):
    'demo', 'npz' (a MedMNIST archive), 'radimagenet' (a folder with split CSVs) or
    'folder' (an image folder, split here)."""
    if not data or data == DEMO:
        return "demo"
    if data.lower().endswith(".npz"):
        return "npz"
    return "radimagenet" if split_csv else "folder"


class PathList(Sequence[str]):
    """File paths packed into two numpy arrays: their bytes end to end and where each
    path ends. A loader worker forked from the trainer reads a path without touching a
    Python object per path; a list of str is written to on every read (its reference
    counts), so copy-on-write gave each worker its own copy of the whole list (194 MB
    a worker after 384,000 samples at RadImageNet's size)."""

    __slots__ = ("_data", "_ends")
    _CHUNK = 65_536  # paths gathered at once by ``take`` (bounds its index arrays)

    def __init__(self, paths: Sequence[str] = ()) -> None:
        if isinstance(paths, PathList):
            self._data, self._ends = paths._data, paths._ends
            return
        # one encode of all the paths, NUL-separated (a path never holds NUL), as
        # os.fsencode would encode each
        joined = "\0".join(paths).encode(sys.getfilesystemencoding(),
                                         sys.getfilesystemencodeerrors())
        data = np.frombuffer(joined, dtype=np.uint8)
        breaks = np.flatnonzero(data == 0)
        self._data = np.delete(data, breaks)
        self._ends = (np.append(breaks, len(data)) - np.arange(len(breaks) + 1)
                      if len(paths) else np.zeros(0, np.int64)).astype(np.int64)

    @classmethod
    def _packed(cls, data: np.ndarray, ends: np.ndarray) -> PathList:
        out = cls.__new__(cls)
        out._data, out._ends = data, ends
        return out

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        i = int(index)
        if i < 0:
            i += len(self._ends)
        if not 0 <= i < len(self._ends):
            raise IndexError("path index out of range")
        start = int(self._ends[i - 1]) if i else 0
        return os.fsdecode(self._data[start:int(self._ends[i])].tobytes())

    def __iter__(self):
        data, start = self._data.tobytes(), 0
        for end in self._ends.tolist():
            yield os.fsdecode(data[start:end])
            start = end

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PathList):
            return (np.array_equal(self._ends, other._ends)
                    and np.array_equal(self._data, other._data))
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # mutable-looking like a list; never a dict key

    def __repr__(self) -> str:
        return f"PathList({len(self):,} paths)"

    def take(self, indices: np.ndarray) -> PathList:
        """The paths at ``indices``, packed again (vectorised, in bounded chunks)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        small = np.int32 if len(self._data) < 2**31 else np.int64  # half the index bytes
        starts = np.concatenate(([0], self._ends[:-1])).astype(small)
        lengths = (self._ends - starts).astype(small)
        pieces = []
        for at in range(0, len(indices), self._CHUNK):
            chosen = indices[at:at + self._CHUNK]
            first, size = starts[chosen], lengths[chosen]
            ends = np.cumsum(size, dtype=small)
            offsets = np.repeat(first - (ends - size), size)
            offsets += np.arange(len(offsets), dtype=small)
            pieces.append(self._data[offsets])
        data = np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)
        return PathList._packed(data, np.cumsum(lengths[indices], dtype=np.int64))


class FileSamples:
    """Images on disk, read when asked."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray) -> None:
        self.paths = PathList(paths)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, preprocessing: Preprocessing,
             eight_bit: bool = False) -> np.ndarray:
        """The image as ``preprocessing`` reads it (with its read-time reduction);
        ``eight_bit``: as ``Preprocessing.read``."""
        return preprocessing.read(self.paths[index], eight_bit)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def subset(self, indices: np.ndarray) -> FileSamples:
        return FileSamples(self.paths.take(indices), self.labels[indices])


class ArraySamples:
    """Images held in memory as uint8 (N x H x W or N x H x W x 3)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, prefix: str) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.prefix = prefix
        self.ids = np.arange(len(images))

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, preprocessing: Preprocessing | None = None,
             eight_bit: bool = False) -> np.ndarray:
        """The image in [0, 1] (``eight_bit``: its uint8 values); held in memory, so
        there is nothing to reduce."""
        if eight_bit:
            return self.images[index]
        return self.images[index].astype(np.float32) / 255.0

    def describe(self, index: int) -> str:
        return f"{self.prefix} #{self.ids[index]}"

    def write_png(self, index: int, path: str | Path) -> Path:
        """The image as a PNG file: lossless, so it reads back as the same array (how the
        app opens an in-memory validation image in Predict)."""
        from PIL import Image

        Image.fromarray(self.images[index]).save(path)
        return Path(path)

    def subset(self, indices: np.ndarray) -> ArraySamples:
        out = ArraySamples(self.images[indices], self.labels[indices], self.prefix)
        out.ids = self.ids[indices]
        return out


Samples = FileSamples | ArraySamples


@dataclass(frozen=True)
class Dataset:
    """A dataset ready for training: class names, three splits, channel count."""

    source: str  # "demo" or the path the user gave
    kind: str  # demo | folder | medmnist
    class_names: tuple[str, ...]
    train: Samples
    val: Samples
    channels: int  # 1 for grayscale, 3 for colour
    warnings: tuple[str, ...] = ()  # what the user should know (empty folders, no val image)
    test: Samples | None = None  # None: the data has no test split
    test_source: str = ""  # where the test split comes from, in words
    audit: AuditReport | None = None  # what core.audit found (None: not audited)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def all_warnings(self) -> tuple[str, ...]:
        """The reader's warnings, and every class the validation split does not cover."""
        missing = missing_classes(self.val.labels, self.class_names)
        extra = ((f"{len(missing)} class(es) have no validation image, so their accuracy and "
                  f"calibration are not measured: {', '.join(missing[:5])}"
                  f"{' …' if len(missing) > 5 else ''}.",) if missing else ())
        found = () if self.audit is None or self.audit.clean else tuple(self.audit.lines())
        return self.warnings + extra + found

    def per_class_counts(self) -> dict[str, tuple[int, int, int]]:
        """Class name -> (train, validation, test images)."""
        k = self.num_classes
        splits = [s.labels if s is not None else np.zeros(0, dtype=np.int64)
                  for s in (self.train, self.val, self.test)]
        counts = [np.bincount(labels, minlength=k) for labels in splits]
        return {n: tuple(int(c[i]) for c in counts) for i, n in enumerate(self.class_names)}


def dataset_key(config: RunConfig) -> tuple:
    """The settings that decide which dataset and split ``open_dataset`` gives."""
    return (config.data, config.split_csv or None, config.val_fraction, config.test_fraction,
            config.test_data or None, config.split_seed,
            config.demo_per_class if config.data == DEMO else None, config.group_pattern or None,
            config.audit_data, config.drop_duplicates)


def open_dataset(config: RunConfig,
                 progress: Callable[[int, int], None] | None = None) -> Dataset:
    """The dataset ``config`` describes ("demo", a folder or a ``.npz``), split if it has
    no split of its own (whole groups a split with ``group_pattern``), with its test split
    (held out, its own, or ``test_data``), audited (``audit_data``; ``progress(done,
    total)`` follows the hashing) and without its leaked copies (``drop_duplicates``).
    The trainer, the study, evaluation and the app all open data here."""
    fractions = (config.val_fraction, 0.0 if config.test_data else config.test_fraction)
    if not 0.0 < fractions[0] < 1.0 or not 0.0 <= fractions[1] < 1.0 - fractions[0]:
        raise DataError("the validation and test fractions must be between 0 and 1 and "
                        "leave images to train on.")
    dataset = _open_main(config, fractions)
    if config.test_data:
        test = open_test_folder(config.test_data, dataset.class_names)
        dataset = replace(dataset, test=test, test_source=f"the external folder "
                          f"{printable(config.test_data)}")
    if config.audit_data:
        from olsdesk.core.audit import audit_dataset, drop_leaked

        dataset = replace(dataset, audit=audit_dataset(dataset, progress=progress))
        if config.drop_duplicates:
            dataset = drop_leaked(dataset, dataset.audit)
    return dataset


def _open_main(config: RunConfig, fractions: tuple[float, float]) -> Dataset:
    data, split_seed = config.data, config.split_seed
    kind = data_kind(data, config.split_csv)
    if config.group_pattern and (kind in ("demo", "npz") or config.split_csv):
        raise DataError("a group pattern splits an image folder; "
                        + ("split CSVs give their own split (a group column in them is "
                           "checked by the audit instead)." if config.split_csv else
                           "the demo set and MedMNIST archives have no file names to find "
                           "groups in."))
    if kind == "demo":
        return _open_demo(config.demo_per_class, fractions, split_seed)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"{data} does not exist.")
    if not path.is_dir() and not path.is_file():
        raise DataError(f"{data} is neither a folder nor a file (a device or a pipe?); give an "
                        "image folder or a MedMNIST .npz archive.")
    if path.is_file():
        if kind == "npz":
            return _open_medmnist(path, fractions, split_seed)
        raise DataError(f"{data} is a file; give an image folder or a MedMNIST .npz archive.")
    if kind == "radimagenet":
        return _open_csv_split(path, Path(config.split_csv).expanduser())
    return _open_folder(path, fractions, split_seed, config.group_pattern)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int,
                     test_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices holding the fractions of every class, seeded and
    independent of the order classes come in. A class keeps at least one training image;
    with two or more it gives one to validation (when ``val_fraction`` > 0), with three or
    more one to test (when ``test_fraction`` > 0). ``test_fraction=0`` gives exactly the
    train/validation split olsdesk made before it held out a test split."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = 0 if n < 2 or val_fraction <= 0 else max(1, int(round(n * val_fraction)))
        n_val = min(n_val, n - 1)
        n_test = (0 if n - n_val < 2 or test_fraction <= 0
                  else max(1, int(round(n * test_fraction))))
        n_test = min(n_test, n - n_val - 1)
        val.append(idx[:n_val])
        test.append(idx[n_val:n_val + n_test])
        train.append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def stratified_group_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float,
                           seed: int, test_fraction: float = 0.0
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices with every group (a patient) in one split, each
    class's shares as near the fractions as whole groups allow. Groups are placed largest
    first (ties in a seeded order), each into the split that still lacks most of the
    classes it holds: a greedy stratification, like scikit-learn's StratifiedGroupKFold."""
    labels = np.asarray(labels)
    names, group = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = np.zeros((len(names), k))
    np.add.at(counts, (group, labels), 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    targets = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    wanted = targets[:, None] * counts.sum(axis=0)[None, :]  # split x class
    placed = np.zeros_like(wanted)
    where = np.zeros(len(names), dtype=np.int64)
    allowed = targets > 0
    for g in order:
        # what each split still lacks of this group's classes, as a share of the class
        lack = ((wanted - placed) * counts[g]).sum(axis=1) / max(counts[g].sum(), 1.0)
        lack[~allowed] = -np.inf
        if not placed[0].any():  # the first (largest) group trains: no split is empty of it
            split = 0
        else:
            split = int(np.argmax(lack))
        where[g] = split
        placed[split] += counts[g]
    by_image = where[group]
    return tuple(np.flatnonzero(by_image == s).astype(np.int64) for s in range(3))


def group_of(names: Sequence[str], pattern: str) -> np.ndarray:
    """Each file's group from ``pattern``, a regular expression searched in its path: the
    first capture group, or the whole match when it has none. A file the pattern does not
    match is a group of its own."""
    regex = re.compile(pattern)
    out = []
    for name in names:
        match = regex.search(name)
        if match is None:
            out.append(f"\0{name}")  # never shares a group
        else:
            out.append(match.group(1) if regex.groups else match.group(0))
    return np.array(out, dtype=str)


def _split(samples: Samples, fractions: tuple[float, float], seed: int,
           groups: np.ndarray | None = None):
    """(train, val, test or None) subsets of ``samples`` (whole groups a split when
    ``groups`` are given)."""
    tr, va, te = (stratified_split(samples.labels, fractions[0], seed, fractions[1])
                  if groups is None else
                  stratified_group_split(samples.labels, groups, fractions[0], seed,
                                         fractions[1]))
    return samples.subset(tr), samples.subset(va), samples.subset(te) if len(te) else None


def missing_classes(labels: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """The classes no label names (a split without any image of them)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    return [n for n, c in zip(class_names, counts, strict=False) if c == 0]


def sample_names(samples: Samples | None) -> tuple[str, ...]:
    if samples is None:
        return ()
    if isinstance(samples, FileSamples):
        return tuple(samples.paths)
    return tuple(samples.describe(i) for i in range(len(samples)))


def keep_recorded_split(data: Dataset, train: Sequence[str] | None, val: Sequence[str],
                        test: Sequence[str], external_test: bool = False
                        ) -> tuple[Dataset, str | None]:
    """``data`` split as a run recorded it, and a sentence when that differs from how
    the data splits today (files were added, moved or removed since the run started),
    for a run being continued: the images it validated and tested on must not train
    now, nor new files join a run whose first epochs never saw them. ``train`` is None
    for a run that did not record its training files (olsdesk before 0.4): its held-out
    images are held out again and anything else trains. ``external_test``: the test
    images come from a folder of their own, not from this split, and stay as they are."""
    recorded_test = () if external_test else tuple(test)
    if not val:  # a run from before olsdesk recorded its split: nothing to keep
        return data, None
    if (tuple(val) == sample_names(data.val)
            and (external_test or recorded_test == sample_names(data.test))
            and (train is None or tuple(train) == sample_names(data.train))):
        return data, None
    parts = [s for s in (data.train, data.val, None if external_test else data.test)
             if s is not None]
    if not all(isinstance(s, FileSamples) for s in parts):
        return data, ("the data splits differently from the run's recorded split, and an "
                      "in-memory dataset cannot be re-split by name; the run continues on "
                      "today's split.")
    label = {p: int(c) for s in parts for p, c in zip(s.paths, s.labels, strict=True)}
    held = set(val) | set(recorded_test)
    older = train is None
    if older:
        train = [p for s in parts for p in s.paths if p not in held]
    known = held | set(train)

    def pick(names: Sequence[str]) -> FileSamples:
        present = [n for n in names if n in label]
        return FileSamples(present, np.array([label[n] for n in present], dtype=np.int64))

    kept = replace(data, train=pick(train), val=pick(val),
                   test=data.test if external_test else (pick(recorded_test) if recorded_test
                                                         else None))
    new = sum(p not in known for p in label)
    gone = sum(n not in label for n in known)
    said = []
    if new:
        said.append(f"{new:,} file{'s' if new != 1 else ''} added since "
                    f"{'are' if new != 1 else 'is'} left out")
    if gone:
        said.append(f"{gone:,} of the run's files {'are' if gone != 1 else 'is'} gone")
    if not said:
        said.append("its files are in other splits today")
    sentence = (f"the data changed since the run started ({'; '.join(said)}): the run keeps "
                f"the split it recorded ({len(kept.train):,} training, {len(kept.val):,} "
                f"validation{'' if kept.test is None else f', {len(kept.test):,} test'} images"
                + ("; it predates olsdesk recording its training files, so files added since "
                   "train with it)." if older else ")."))
    return kept, sentence


HELD_OUT = "held out from the data"  # a test split split off the data, in words


def _held_out(test) -> str:
    return HELD_OUT if test is not None else ""


def _open_demo(per_class: int, fractions: tuple[float, float], split_seed: int) -> Dataset:
    from olsdesk.core.data.demo import make_demo

    demo = make_demo(per_class)
    samples = ArraySamples(demo.images, demo.labels, "demo")
    train, val, test = _split(samples, fractions, split_seed)
    return Dataset(DEMO, "demo", demo.class_names, train, val, 1, test=test,
                   test_source=_held_out(test))


def _open_medmnist(path: Path, fractions: tuple[float, float], split_seed: int) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.name} is not a readable .npz archive ({exc}).") from exc
    with archive:
        keys = set(archive.files)
        if "train_images" not in keys or "train_labels" not in keys:
            raise DataError(f"{path.name} has no train_images/train_labels: not a MedMNIST archive.")
        splits = [s for s in ("train", "val", "test")
                  if f"{s}_images" in keys and f"{s}_labels" in keys]
        images = {s: archive[f"{s}_images"] for s in splits}
        labels = {s: archive[f"{s}_labels"] for s in splits}
    for split, y in labels.items():
        if y.ndim == 2 and y.shape[1] > 1:
            raise DataError(f"{path.name} is multi-label ({y.shape[1]} labels an image); "
                            "olsdesk trains single-label classifiers.")
        labels[split] = y.reshape(-1).astype(np.int64)
    for split, x in images.items():
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"{path.name} holds {split} images of shape {x.shape[1:]}; "
                            "olsdesk reads 2-D MedMNIST (N x H x W or N x H x W x 3).")
        if x.ndim == 4 and x.shape[-1] == 1:
            images[split] = x[..., 0]
        if images[split].dtype != np.uint8:
            images[split] = np.clip(images[split], 0, 255).astype(np.uint8)
    num_classes = int(max(int(y.max()) for y in labels.values())) + 1
    if num_classes < 2:
        raise DataError(f"{path.name} has only one class; a classifier needs two or more.")
    names = tuple(f"class {i}" for i in range(num_classes))
    channels = 3 if images["train"].ndim == 4 else 1
    own = {s: ArraySamples(images[s], labels[s], f"{path.name}:{s}") for s in splits}
    # what the archive lacks is split from its training images
    train, val, test = _split(own["train"], (0.0 if "val" in own else fractions[0],
                                             0.0 if "test" in own else fractions[1]),
                              split_seed)
    val, test = own.get("val", val), own.get("test", test)
    source = ("the archive's test arrays" if "test" in own else _held_out(test))
    return Dataset(str(path), "medmnist", names, train, val, channels, test=test,
                   test_source=source)


def _is_image_file(path: Path) -> bool:
    """An image suffix, or an extension-less DICOM (only regular files are sniffed)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


_NAME = operator.attrgetter("name")


def scan_folder(root: Path) -> tuple[list[str], list[str], list[str]]:
    """Image paths, their classes (a class is the image's folder relative to ``root``),
    and the leaf folders that hold no image. Only regular files are ever opened.
    Folders are walked top-down in sorted order, as ``os.walk`` would (symbolic links to
    folders are listed, not followed), on plain strings: a Path per file made the scan
    3.5x torchvision's ImageFolder at RadImageNet's size."""
    paths, classes, empty = [], [], []
    base = str(root.resolve())
    stack = [(base, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=_NAME)
        except OSError:  # unreadable folder: skipped, as os.walk does
            continue
        below, found = [], 0
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                below.append(entry)
            elif rel:
                dot = name.rfind(".")  # Path(name).suffix.lower(), without a Path
                suffix = name[dot:].lower() if 0 < dot < len(name) - 1 else ""
                if suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(Path(entry.path))):
                    paths.append(entry.path)
                    found += 1
        if rel:
            classes.extend([rel] * found)
            if not found and not below:
                empty.append(rel)
        for entry in reversed(below):
            if not entry.is_symlink():
                stack.append((entry.path, f"{rel}/{entry.name}" if rel else entry.name))
    return paths, classes, empty


def recorded_files(root: Path, names: Sequence[str], class_names: Sequence[str]
                   ) -> tuple[FileSamples, int] | None:
    """The files of a recorded split of the image folder ``root`` (full paths, as
    ``scan_folder`` gives them), labelled by their folders as ``scan_folder`` labels
    them, without walking the folder: (those still there, how many are gone). None
    when a name is not a file of one of ``class_names``' folders under ``root`` (then
    the folder must be opened as usual)."""
    base = str(root.expanduser().resolve()) + os.sep
    index = {c: i for i, c in enumerate(class_names)}
    present, labels = [], []
    for name in names:
        rel = name[len(base):] if name.startswith(base) else ""
        # a file of a class folder, never a way out of the root ('../')
        label = index.get(os.path.dirname(rel).replace(os.sep, "/"))
        if label is None or ".." in rel.split(os.sep):
            return None
        if os.path.isfile(name):
            present.append(name)
            labels.append(label)
    return FileSamples(present, np.array(labels, dtype=np.int64)), len(names) - len(present)


def _open_folder(root: Path, fractions: tuple[float, float], split_seed: int,
                 group_pattern: str | None = None) -> Dataset:
    paths, classes, empty = scan_folder(root)
    if not paths:
        loose = [p for p in root.iterdir() if p.is_file() and _is_image_file(p)]
        if loose:
            raise DataError(f"{root} holds images but no class folders; put each class's "
                            "images in a sub-folder named after the class.")
        raise DataError(f"{root} contains no images (PNG, JPEG, TIFF, BMP or DICOM).")
    names = tuple(sorted(set(classes)))
    if len(names) < 2:
        raise DataError(f"{root} has only one class folder ({names[0]}); a classifier needs "
                        "two or more.")
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[c] for c in classes])
    samples = FileSamples(paths, labels)
    groups = None
    warnings = _empty_folders_warning(empty)
    if group_pattern:
        cut = len(str(root.resolve())) + 1
        groups = group_of([p[cut:].replace(os.sep, "/") for p in paths], group_pattern)
        unmatched = int(sum(g.startswith("\0") for g in groups))
        if unmatched == len(paths):
            raise DataError(f"the group pattern {group_pattern!r} matches none of the "
                            f"{len(paths):,} file paths (e.g. {printable(paths[0])}).")
        warnings += ((f"the group pattern matches no group in {unmatched:,} of "
                      f"{len(paths):,} file paths; each of those is a group of its own.",)
                     if unmatched else ())
    train, val, test = _split(samples, fractions, split_seed, groups)
    return Dataset(str(root), "folder", names, train, val, _detect_channels(samples), warnings,
                   test=test, test_source=_held_out(test))


def _empty_folders_warning(empty: list[str], shown: int = 3) -> tuple[str, ...]:
    """One warning for every leaf folder without an image, however many there are (one a
    folder made 100,000 lines of log and froze the app's summary for 37 s)."""
    if len(empty) == 1:
        return (f"the folder {printable(empty[0])} holds no images, so it is not a class.",)
    if not empty:
        return ()
    examples = ", ".join(printable(e) for e in empty[:shown])
    return (f"{len(empty):,} folders hold no images, so they are not classes: {examples}"
            f"{' …' if len(empty) > shown else ''}.",)


def open_test_folder(folder: str | Path, class_names: tuple[str, ...]) -> FileSamples:
    """An external test set: an image folder whose class folders are (some of) the run's
    classes, labelled in the run's class order. DataError names a class the model does
    not know."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"test data {printable(folder)} is not a folder.")
    paths, classes, _ = scan_folder(root)
    if not paths:
        raise DataError(f"the test folder {printable(folder)} contains no images in class "
                        "folders.")
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted(set(classes) - set(index))
    if unknown:
        raise DataError(f"the test folder {printable(folder)} has class folders the model "
                        f"was not trained on: {', '.join(printable(u) for u in unknown[:5])}"
                        f"{' …' if len(unknown) > 5 else ''}; its class folders must carry "
                        "the run's class names.")
    return FileSamples(paths, np.array([index[c] for c in classes], dtype=np.int64))


def _find_split_csv(csv_dir: Path, split: str) -> Path | None:
    if csv_dir.is_file():
        return csv_dir if split == "train" else None
    matches = sorted(p for p in csv_dir.glob("*.csv") if split in p.stem.lower())
    return matches[0] if matches else None


def _read_split_csv(path: Path) -> list[tuple[str, str, str]]:
    """(filename, label, group) rows; the group is "" without a group column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            file_key = next((fields[k] for k in ("filename", "path", "file") if k in fields), None)
            label_key = next((fields[k] for k in ("label", "class") if k in fields), None)
            if file_key is None or label_key is None:
                raise DataError(f"{path.name} needs the columns filename and label.")
            group_key = next((fields[k] for k in ("group", "patient", "patient_id")
                              if k in fields), None)
            rows = []
            for number, row in enumerate(reader, start=2):  # line 1 is the header
                if not row.get(file_key):
                    continue
                label = (row.get(label_key) or "").strip()
                if not label:
                    raise DataError(f"{path.name}, line {number}: "
                                    f"{printable(row[file_key].strip())} has no label; give "
                                    "every image its class.")
                rows.append((row[file_key].strip(), label,
                             (row.get(group_key) or "").strip() if group_key else ""))
            return rows
    except OSError as exc:
        raise DataError(f"{path.name} cannot be read ({exc.strerror}).") from exc


def _groups_in_several_splits(rows: dict[str, list[tuple[str, str, str]]]) -> tuple[str, ...]:
    """A sentence when a split CSV's group (a patient) has images in two or more splits."""
    seen: dict[str, set[str]] = {}
    for split, lines in rows.items():
        for _, _, group in lines:
            if group:
                seen.setdefault(group, set()).add(split)
    shared = sorted(g for g, splits in seen.items() if len(splits) > 1)
    if not shared:
        return ()
    return (f"{len(shared):,} group(s) of the split CSVs have images in more than one split "
            f"(e.g. {printable(shared[0])}): the same patient in training and evaluation "
            "inflates the numbers.",)


def _resolve_base(root: Path, filenames: list[str]) -> Path:
    """The folder the CSV's filenames are relative to: the root, or its parent."""
    probe = filenames[: min(20, len(filenames))]
    for base in (root, root.parent):
        if any((base / f).exists() for f in probe):
            return base
    raise DataError(f"the split files name images (e.g. {probe[0]}) that are not under {root}.")


def _open_csv_split(root: Path, csv_dir: Path) -> Dataset:
    if not csv_dir.exists():
        raise DataError(f"{csv_dir} does not exist.")
    found = {s: _find_split_csv(csv_dir, s) for s in ("train", "val", "test")}
    if found["train"] is None or found["val"] is None:
        raise DataError(f"{csv_dir} needs a train and a val CSV (e.g. RadiologyAI_train.csv).")
    rows = {s: _read_split_csv(path) for s, path in found.items() if path is not None}
    if not all(rows.values()):
        raise DataError(f"a split file in {csv_dir} lists no images.")
    base = _resolve_base(root, [f for f, _, _ in rows["train"]])
    names = tuple(sorted({label for split in rows.values() for _, label, _ in split}))
    if len(names) < 2:
        raise DataError(f"the split files in {csv_dir} name only one class.")
    index = {n: i for i, n in enumerate(names)}
    splits = {
        s: FileSamples([str(base / f) for f, _, _ in r],
                       np.array([index[lab] for _, lab, _ in r]))
        for s, r in rows.items()
    }
    test = splits.get("test")
    warnings = () if test is not None else (
        f"{csv_dir} has no test CSV (e.g. RadiologyAI_test.csv), so the run has no held-out "
        "test split; evaluate it on an external folder with --test-data.",)
    warnings += _groups_in_several_splits(rows) + _outside_warning(base, rows, csv_dir)
    return Dataset(str(root), "folder", names, splits["train"], splits["val"],
                   _detect_channels(splits["train"]), warnings, test=test,
                   test_source=f"{found['test'].name}" if test is not None else "")


def _outside_warning(base: Path, rows: dict, csv_dir: Path) -> tuple[str, ...]:
    """A warning when split CSV rows name files outside the data folder (an absolute
    path, or ``../`` climbing out of it): they are read from there, which a user who
    points olsdesk at one folder would not expect without a word."""
    inside = os.path.normpath(base)
    outside = [f for split in rows.values() for f, _, _ in split
               if (os.path.isabs(f) or ".." in Path(f).parts)
               and os.path.commonpath([inside, os.path.normpath(base / f)]) != inside]
    if not outside:
        return ()
    return (f"{len(outside):,} row{'s' if len(outside) != 1 else ''} of the split files in "
            f"{printable(csv_dir)} name files outside {printable(base)} (e.g. "
            f"{printable(outside[0])}); they are read from there.",)


def _detect_channels(samples: FileSamples, probe: int = 16) -> int:
    """3 if any of a few evenly spaced images is in colour, else 1 (a probe of the colour
    mode only, read small; no model ever sees these arrays)."""
    n = len(samples)
    for i in np.unique(np.linspace(0, n - 1, min(probe, n)).astype(int)):
        try:
            if read_image(samples.paths[int(i)], 16).ndim == 3:
                return 3
        except ImageReadError:
            continue
    return 1
