"""RunStore: one run's directory on disk.

```
<run>/config.json        RunConfig
<run>/run.json           class names, preprocessing, dataset summary, status (small)
<run>/split.json.gz      the validation and test file names
<run>/train_names.json.gz  the training file names, in their order
<run>/metrics.jsonl      one line of scalars per epoch
<run>/epochs/0001.npz    the epoch's arrays (soft labels, reliability, embedding, ...)
<run>/checkpoints/latest.pt, best.pt
<run>/log.txt            skipped files and other notes, newest last
```

Every file is written atomically (a temporary file renamed into place), so a reader,
such as the app replaying a run that is still training, never sees half a file.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from olsdesk.config import RunConfig
from olsdesk.core.archives import check_archive
from olsdesk.core.files import open_regular, read_regular_bytes, read_regular_text
from olsdesk.core.records import Checkpoint, RunInfo
from olsdesk.core.report import ARRAY_FIELDS, RELIABILITY_FIELDS, EpochArraysError, EpochReport
from olsdesk.errors import ConfigError, RunError, first_line, os_reason, printable

LATEST = "latest.pt"
BEST = "best.pt"
# the held-out file names ({"validation", "test"}, in order: the app names validation
# images by them) and the training ones (in order, so that a resume shuffles the same),
# apart: opening a run reads only the first; a resume and evaluate keep the split; and
# run.json, rewritten at every status change, stays small
SPLIT = "split.json.gz"
TRAIN_NAMES = "train_names.json.gz"
# what a list of runs shows of metrics.jsonl (epochs, best top-1, final ECE), rewritten
# with each epoch: listing 200 runs of 100 epochs reads 200 of these instead of parsing
# 20,000 lines; trusted only while metrics.jsonl has the size it records and is no newer
SUMMARY = "summary.json"
log = logging.getLogger(__name__)


def default_runs_dir() -> Path:
    """Where runs go unless the user says otherwise: the user data dir."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("olsdesk", appauthor=False)) / "runs"


def _process_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux);
    elsewhere set and restored once, at import, before any thread of ours runs."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_process_umask()  # what open() would give: colleagues can read runs


def check_run_name(name: str | None) -> None:
    """RunError unless ``name`` (None or "": a generated one) names a folder inside the
    runs folder: ``--name ../../x`` or an absolute name wrote the run elsewhere."""
    if name and (not name.strip() or name in (".", "..")
                 or any(c in name for c in ("/", "\\", "\0"))):
        raise RunError(f"the run name {printable(name)!r} is not a folder name; give a name "
                       "without slashes (the run is made inside the runs folder).")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed into place), with the
    permissions the user's umask gives every other file (mkstemp's own are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- creating and opening -------------------------------------------------
    @classmethod
    def create(cls, runs_dir: str | Path | None, config: RunConfig, info: RunInfo,
               name: str | None = None, train_names: Sequence[str] = ()) -> RunStore:
        """A new, uniquely named run directory holding ``config``, ``info`` and the names
        of its training files beside the held-out ones of ``info`` (a resume keeps the
        split they record)."""
        check_run_name(name)
        runs_dir = ensure_runs_dir(runs_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{config.model}-{config.loss}-s{config.seed}"
        for n in range(1000):
            path = runs_dir / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunError(f"cannot create a run folder in {printable(runs_dir)} "
                               f"({exc.strerror}).") from None
        else:
            raise RunError(f"cannot create a new run folder in {printable(runs_dir)}.")
        store = cls(path)
        try:
            store.write_config(config)
            store._write_names(TRAIN_NAMES, train=train_names)
            store._write_names(SPLIT, validation=info.validation_names, test=info.test_names)
            store.write_info(info.with_status("created"))
        except OSError as exc:  # a full disk: no empty run folder left behind
            shutil.rmtree(path, ignore_errors=True)
            raise RunError(f"cannot create a run in {printable(runs_dir)} "
                           f"({os_reason(exc)}).") from None
        return store

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """An existing run, or RunError saying why the folder is not one."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise RunError(f"{path} is not a folder.")
        if not (path / "config.json").is_file() or not (path / "run.json").is_file():
            raise RunError(f"{path} is not an olsdesk run (no config.json and run.json).")
        store = cls(path)
        if RunLock.holder(path) is None:
            store.remove_stale_temp_files()  # left by a process that was killed mid-write
        return store

    @classmethod
    def find(cls, name: str, runs_dir: str | Path | None = None) -> RunStore:
        """A run given as a path, or as a folder name inside ``runs_dir``."""
        candidate = Path(name).expanduser()
        if not candidate.is_dir():
            inside = (Path(runs_dir).expanduser() if runs_dir else default_runs_dir()) / name
            if inside.is_dir():
                candidate = inside
        return cls.open(candidate)

    # --- metadata -------------------------------------------------------------
    def config(self) -> RunConfig:
        """config.json, validated; RunError saying why when it cannot be used."""
        try:
            return RunConfig.from_json(read_regular_text(
                self.path / "config.json")).validated()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise RunError(f"{self._name}/config.json cannot be read ({why}).") from None
        except (ConfigError, TypeError) as exc:
            raise RunError(f"{self._name}/config.json cannot be used: {first_line(exc)}"
                           ) from None

    @property
    def _name(self) -> str:
        return printable(self.path.name)

    def write_config(self, config: RunConfig) -> None:
        atomic_write_bytes(self.path / "config.json", config.to_json().encode())

    NOTES = "notes.md"

    def notes(self) -> str:
        """The user's notes on this run ("" when none)."""
        try:  # written by hand in another encoding: shown with what cannot be read marked
            return read_regular_text(self.path / self.NOTES, errors="replace")
        except OSError:
            return ""

    def write_notes(self, text: str) -> None:
        """Keep the user's notes in the run folder (notes.md), or remove an emptied one."""
        if text.strip():
            atomic_write_bytes(self.path / self.NOTES, text.encode("utf-8"))
        else:
            (self.path / self.NOTES).unlink(missing_ok=True)

    def info(self, names: bool = False) -> RunInfo:
        """run.json; with ``names``, its validation and test file names too (read from
        split.json.gz: only what names images needs them). RunError when a file is
        missing or damaged."""
        try:
            info = RunInfo.from_dict(json.loads(read_regular_text(self.path / "run.json")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{self._name}/run.json cannot be read ({_why(exc)}).") from None
        split = self.split_names() if names else None
        if split is not None:
            info = replace(info, validation_names=split["validation"],
                           test_names=split["test"])
        return info

    def _names_file(self, name: str, keys: tuple[str, ...]) -> dict | None:
        """A gzipped JSON object of file-name lists (None when the file is not there);
        RunError when it is damaged."""
        path = self.path / name
        if not path.is_file():
            return None
        damaged = f"{self._name}/{name} is damaged: the run's split cannot be read"
        try:
            data = json.loads(gzip.decompress(read_regular_bytes(path)))
        except (OSError, ValueError, EOFError, gzip.BadGzipFile) as exc:
            raise RunError(f"{damaged} ({_why(exc)}).") from None
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), list) and all(isinstance(n, str) for n in data[k])
                for k in keys):
            raise RunError(f"{damaged} (it is not lists of file names).")
        return {k: tuple(data[k]) for k in keys}

    def split_names(self) -> dict[str, tuple[str, ...]] | None:
        """split.json.gz: the validation and test file names; None when the run predates
        the file (0.3's run.json holds them itself); RunError when it is damaged."""
        return self._names_file(SPLIT, ("validation", "test"))

    def train_names(self) -> tuple[str, ...] | None:
        """The files the run trains on, as it recorded them when it started (None: the
        run predates olsdesk recording them); RunError when the file is damaged."""
        names = self._names_file(TRAIN_NAMES, ("train",))
        return None if names is None else names["train"]

    def _write_names(self, name: str, **lists: Sequence[str]) -> None:
        data = json.dumps({k: list(v) for k, v in lists.items()}).encode()
        atomic_write_bytes(self.path / name, gzip.compress(data, 6))

    def recorded_split(self, data, external_test: bool = False):
        """``data`` (a Dataset) split as this run recorded it, and the sentence saying
        what changed since (``keep_recorded_split``); RunError when a record is damaged."""
        from olsdesk.core.data.sources import keep_recorded_split

        info = self.info(names=True)
        return keep_recorded_split(data, self.train_names(), info.validation_names,
                                   info.test_names, external_test)

    def write_info(self, info: RunInfo) -> None:
        """run.json, without the file names (split.json.gz holds them). A run from olsdesk
        0.3 keeps its held-out names in run.json: they move to split.json.gz first."""
        if (info.validation_names or info.test_names) and not (self.path / SPLIT).is_file():
            self._write_names(SPLIT, validation=info.validation_names, test=info.test_names)
        atomic_write_bytes(self.path / "run.json", json.dumps(info.to_dict(), indent=2).encode())

    # --- requests to the process that trains it ---------------------------------------
    CONTROL = "control"
    REQUESTS = ("run", "pause", "stop")

    def request(self, what: str) -> None:
        """Ask whatever process trains this run (another process, torchrun's rank 0, a
        cluster job writing to a shared disk) to pause, run on, or stop after the batch."""
        if what not in self.REQUESTS:
            raise ValueError(f"unknown request {what!r}")
        atomic_write_bytes(self.path / self.CONTROL, what.encode())

    def requested(self) -> str:
        """The standing request: 'run' (none), 'pause' or 'stop'."""
        try:
            what = read_regular_text(self.path / self.CONTROL).strip()
        except OSError:
            return "run"
        return what if what in self.REQUESTS else "run"

    def clear_request(self) -> None:
        (self.path / self.CONTROL).unlink(missing_ok=True)

    def set_status(self, status: str) -> None:
        self.write_info(self.info().with_status(status))

    @property
    def status(self) -> str:
        """run.json's status, except that a run marked 'training' whose lock no process
        holds was killed mid-run: 'interrupted' (it can be continued)."""
        status = self.info().status
        if status == "training" and RunLock.holder(self.path) is None:
            return "interrupted"
        return status

    def lock(self) -> RunLock:
        """Hold this run for writing (RunError naming the process that holds it already)."""
        return RunLock(self.path).acquire()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete half-written temporary files (only call while no process writes here)."""
        removed = []
        for folder in (self.path, self.path / "checkpoints", self.path / "epochs"):
            for tmp in folder.glob(".*.tmp"):
                try:
                    tmp.unlink(missing_ok=True)
                except OSError as exc:
                    raise RunError(unwritable(self.path, exc)) from None
                removed.append(tmp)
        return removed

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info().class_names

    # --- epochs ---------------------------------------------------------------
    def _epoch_file(self, epoch: int) -> Path:
        return self.path / "epochs" / f"{epoch:04d}.npz"

    def write_epoch(self, report: EpochReport) -> None:
        """The epoch's arrays, then its line in metrics.jsonl (so a line means complete),
        then the summary a list of runs shows."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **report.arrays())
        atomic_write_bytes(self._epoch_file(report.epoch), buffer.getvalue())
        try:
            before = self.summary()
        except RunError:  # a damaged metrics.jsonl: listed from the file, as damaged
            before = None
        scalars = report.scalars()
        with open_regular(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(scalars, allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            size = os.fstat(fh.fileno()).st_size
        if before is None:
            (self.path / SUMMARY).unlink(missing_ok=True)
        else:
            self._write_summary(before.then(scalars), size)

    def write_summary(self) -> None:
        """summary.json for metrics.jsonl as it is now (after metrics.jsonl was written
        other than by ``write_epoch``); RunError when metrics.jsonl is damaged."""
        try:
            data = read_regular_bytes(self.path / "metrics.jsonl")
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise RunError(f"{self._name}/metrics.jsonl cannot be read ({exc.strerror}).") from None
        self._write_summary(RunSummary.of(self.parse_metrics(data)[0]), len(data))

    def _write_summary(self, summary: RunSummary, metrics_bytes: int) -> None:
        atomic_write_bytes(self.path / SUMMARY, json.dumps(
            {**summary.__dict__, "metrics_bytes": metrics_bytes}, allow_nan=True).encode())

    def summary(self) -> RunSummary:
        """What a list of runs shows of metrics.jsonl: from summary.json while it still
        describes the file (its recorded size, and written no earlier than the file was),
        else parsed from metrics.jsonl itself (RunError when that is damaged)."""
        try:
            metrics = os.stat(self.path / "metrics.jsonl")
        except FileNotFoundError:
            return RunSummary.of([])
        except OSError as exc:
            raise RunError(f"{self._name}/metrics.jsonl cannot be read ({exc.strerror}).") from None
        try:
            summary = RunSummary.read(self.path / SUMMARY, metrics)
        except (OSError, ValueError, KeyError, TypeError):
            summary = None
        return summary if summary is not None else RunSummary.of(self.metrics())

    def metrics(self) -> list[dict]:
        """The scalar lines written so far (a half-written last line is left for later);
        RunError naming the line when one is not an epoch's record."""
        path = self.path / "metrics.jsonl"
        try:
            data = read_regular_bytes(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RunError(f"{self._name}/metrics.jsonl cannot be read ({exc.strerror}).") from None
        return self.parse_metrics(data)[0]

    def parse_metrics(self, data: bytes, start: int = 1) -> tuple[list[dict], list[int]]:
        """The epoch records in ``data`` (bytes of metrics.jsonl from a line's start) and
        each one's length in bytes; a last line without its newline is still being
        written and is left out. A complete line that is not an epoch's record (not JSON,
        not UTF-8, a list, a record without its numbers) is RunError naming it: replaying
        up to it would silently drop every later epoch."""
        records, sizes = [], []
        for number, raw in enumerate(data.splitlines(keepends=True), start):
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                record = None
            if not is_epoch_record(record):
                raise RunError(f"line {number} of {self._name}/metrics.jsonl is not an "
                               "epoch's record; the run's file is damaged.")
            records.append(record)
            sizes.append(len(raw))
        return records, sizes

    def truncate_to(self, epoch: int) -> None:
        """Forget epochs after ``epoch`` (a resume restarts from that checkpoint)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epoch]
        text = "".join(json.dumps(m) + "\n" for m in kept).encode()
        atomic_write_bytes(self.path / "metrics.jsonl", text)
        self._write_summary(RunSummary.of(kept), len(text))
        for file in (self.path / "epochs").glob("*.npz"):
            if file.stem.isdigit() and int(file.stem) > epoch:  # not a stray file of the user's
                file.unlink()

    def load_reports(self) -> list[EpochReport]:
        """Every complete epoch as an EpochReport, for replay."""
        return RunFollower(self).read(with_status=False).reports

    @staticmethod
    def load(path: str | Path) -> list[EpochReport]:
        """The reports of the run at ``path`` (finished or still training)."""
        return RunStore.open(path).load_reports()

    # --- checkpoints and log --------------------------------------------------
    def checkpoint_path(self, which: str = LATEST) -> Path:
        return self.path / "checkpoints" / which

    def save_checkpoint(self, checkpoint: Checkpoint, best: bool) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(checkpoint.to_state(), buffer)
        data = buffer.getvalue()
        if best:  # first: best.pt never lags behind the best epoch latest.pt has passed
            atomic_write_bytes(self.checkpoint_path(BEST), data)
        atomic_write_bytes(self.checkpoint_path(LATEST), data)

    def save_embedding_features(self, features: np.ndarray) -> None:
        """The latest epoch's embedded validation features (for t-SNE on demand)."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float16))
        atomic_write_bytes(self.path / "embedding_features.npy", buffer.getvalue())

    def embedding_features(self) -> np.ndarray | None:
        path = self.path / "embedding_features.npy"
        if not path.exists():
            return None
        with open_regular(path, "rb") as fh:
            return np.load(fh).astype(np.float32)

    def log(self, message: str) -> None:
        """Append a line; names that are not valid UTF-8 are written escaped, never lost."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open_regular(self.path / "log.txt", "a", encoding="utf-8",
                              errors="backslashreplace") as fh:
                fh.write(f"{stamp} {printable(message)}\n")
        except OSError as exc:  # a full disk: the line is lost, not the training; what
            # matters (the epoch, its checkpoint) reports its own failure
            log.warning("log.txt of %s could not be written (%s): %s", self.path,
                        exc.strerror or exc, printable(message))


@dataclass(frozen=True)
class RunUpdate:
    """What a run folder gained since the follower last looked."""

    reports: list[EpochReport]  # the epochs not read before, in order
    reset: bool  # the run was cut back (resumed from an earlier epoch): start again
    status: str  # the run's status now ("training", "finished", "interrupted", ...; "" unread)


class RunFollower:
    """Reads a run's epochs as they are written, each once: metrics.jsonl from the byte
    where the last read stopped, and only the new epochs' arrays. Live replay, a run
    followed on disk, a torchrun child and the Compare tab all read runs through it, so
    following a long run costs one epoch's read an epoch, not the whole run's."""

    def __init__(self, store: RunStore, arrays: tuple[str, ...] = ARRAY_FIELDS,
                 last_only: bool = False) -> None:
        """``arrays``: the epochs' arrays to read (the others are left empty);
        ``last_only``: read them for the newest epoch of each read alone (a comparison of
        runs draws the final epoch's bins; every epoch's scalars are read all the same)."""
        self.store = store
        self.arrays = tuple(arrays)
        self.last_only = last_only
        self.count = 0  # epochs read so far
        self._offset = 0  # bytes of metrics.jsonl taken in
        self._names: tuple[str, ...] | None = None

    def read(self, with_status: bool = True) -> RunUpdate:
        """The epochs completed since the last call (a line counts once its arrays are
        there; a half-written last line waits for the next call), and the run's status
        (``with_status``: it reads run.json and tries the lock)."""
        path = self.store.path / "metrics.jsonl"
        reset = False
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self._offset:  # truncated by a resume: read it again from the start
            self._offset, self.count, reset = 0, 0, True
        reports = []
        if size > self._offset:
            with open(path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read(size - self._offset)
            records, sizes = self.store.parse_metrics(chunk, self.count + 1)
            for scalars, length in zip(records, sizes, strict=True):
                report = self._report(scalars, not self.last_only)
                if report is None:  # a line is written after its arrays: they were removed,
                    if RunLock.holder(self.store.path) is None:  # unless a resume is at work
                        raise RunError(
                            f"{self.store._name}/epochs/{int(scalars['epoch']):04d}.npz is "
                            f"missing although metrics.jsonl records epoch {scalars['epoch']}; "
                            "the run's file is damaged.")
                    break
                reports.append(report)
                self._offset += length
            if self.last_only and reports:  # the newest epoch read, with its arrays
                reports[-1] = self._report(records[len(reports) - 1]) or reports[-1]
        self.count += len(reports)
        return RunUpdate(reports, reset, self.store.status if with_status else "")

    def _report(self, scalars: dict, with_arrays: bool = True) -> EpochReport | None:
        file = self.store._epoch_file(int(scalars["epoch"]))
        if not file.exists():
            return None
        if self._names is None:
            self._names = self.store.class_names
        wanted = self.arrays if with_arrays else ()
        partial = wanted != ARRAY_FIELDS
        try:
            if not wanted:
                return EpochReport.from_parts(scalars, {}, self._names, partial)
            # an npz reads an array when it is asked for: those not wanted stay on disk
            with open_regular(file, "rb") as fh, np.load(fh, allow_pickle=False) as arrays:
                return EpochReport.from_parts(scalars, {k: arrays[k] for k in wanted
                                                        if k in arrays}, self._names, partial)
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # never numpy's own words: a garbage file gets advice to load it with pickle
            why = str(exc) if isinstance(exc, EpochArraysError) else "not an epoch's arrays"
            raise RunError(f"{self.store._name}/epochs/{file.name} cannot be used ({why}); "
                           "the run's file is damaged.") from None


class RunReader:
    """Several runs' epochs, each read once: one follower a run folder, so showing a
    run again reads only the epochs it gained. The Compare tab reads through it in a
    worker; one caller at a time (it holds a lock). What it keeps of an epoch is what a
    comparison draws: the scalars, and the reliability bins of each run's final epoch
    (``arrays`` and ``last_only`` as RunFollower's), so the memory of the selected runs
    grows with their epochs, not with their classes or validation images."""

    def __init__(self, arrays: tuple[str, ...] = RELIABILITY_FIELDS,
                 last_only: bool = True) -> None:
        self.arrays, self.last_only = tuple(arrays), last_only
        self._followers: dict[Path, RunFollower] = {}
        self._reports: dict[Path, list[EpochReport]] = {}
        self._lock = threading.Lock()

    def reports(self, paths: list[Path]) -> dict[Path, list[EpochReport]]:
        """Each run's complete epochs now; a run that cannot be read maps to []."""
        with self._lock:
            found = {}
            for path in paths:
                follower = self._followers.get(path)
                if follower is None:
                    follower = self._followers[path] = RunFollower(
                        RunStore(path), self.arrays, self.last_only)
                try:
                    update = follower.read(with_status=False)
                except (RunError, OSError, ValueError, KeyError) as exc:
                    log.warning("run %s cannot be read: %s", path, exc)
                    self._followers.pop(path, None)
                    self._reports.pop(path, None)
                    found[path] = []
                    continue
                kept = [] if update.reset else self._reports.get(path, [])
                self._reports[path] = kept + update.reports
                found[path] = list(self._reports[path])
            return found

    def keep_only(self, paths) -> None:
        """Forget the runs not in ``paths`` (a run folder removed or no longer listed)."""
        wanted = set(paths)
        with self._lock:
            for path in [p for p in self._followers if p not in wanted]:
                self._followers.pop(path, None)
                self._reports.pop(path, None)


@dataclass(frozen=True)
class RunSummary:
    """What a list of runs shows of a run's epochs (summary.json)."""

    epochs: int
    best_top1: float  # nan before the first epoch
    final_ece: float

    @classmethod
    def of(cls, records: list[dict]) -> RunSummary:
        """From metrics.jsonl's records."""
        return cls(len(records), max((m["val_top1"] for m in records), default=float("nan")),
                   records[-1]["ece"] if records else float("nan"))

    def then(self, record: dict) -> RunSummary:
        """With one more epoch's record."""
        best = record["val_top1"] if self.epochs == 0 else max(self.best_top1,
                                                               record["val_top1"])
        return RunSummary(self.epochs + 1, best, record["ece"])

    @classmethod
    def read(cls, path: Path, metrics: os.stat_result) -> RunSummary | None:
        """summary.json when it describes metrics.jsonl as ``metrics`` finds it: the size
        it records, and written no earlier than metrics.jsonl was (a copy or edit of
        metrics.jsonl after it, or a run from before the file: None)."""
        with open_regular(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_mtime_ns < metrics.st_mtime_ns:
                return None
            data = json.loads(fh.read())
        if data["metrics_bytes"] != metrics.st_size:
            return None
        epochs, best, ece = data["epochs"], data["best_top1"], data["final_ece"]
        if type(epochs) is not int or epochs < 0 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in (best, ece)):
            return None
        return cls(epochs, float(best), float(ece))


@dataclass
class RunListing:
    """A run as a list of runs shows it, read once (off the GUI thread)."""

    store: RunStore
    config: RunConfig | None  # None for a damaged run
    status: str
    summary: RunSummary
    notes: str
    problem: str = ""  # why the run is damaged, in one sentence ("" when it is not)
    signature: tuple = ()  # its files' modification times and sizes when they were read

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def epochs_done(self) -> int:
        return self.summary.epochs

    @property
    def best_top1(self) -> float:
        return self.summary.best_top1

    @property
    def final_ece(self) -> float:
        return self.summary.final_ece


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run folders (holding run.json and config.json) under ``root``, newest first."""
    found = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        names = {e.name for e in entries}
        if "run.json" in names and "config.json" in names:
            found.append(folder)
            return
        if level < depth:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_dir():
                    walk(Path(entry.path), level + 1)

    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    if root.is_dir():
        walk(root, 0)
    return sorted(found, key=mtime, reverse=True)


LISTED_FILES = ("config.json", "run.json", "metrics.jsonl", "notes.md")  # what a listing reads


def _signature(path: Path) -> tuple:
    """The modification time and size of each file a listing reads (None: absent)."""
    found = []
    for name in LISTED_FILES:
        try:
            stat = os.stat(path / name)
        except OSError:
            found.append(None)
        else:
            found.append((stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def list_runs(root: str | Path, known: dict[Path, RunListing] | None = None
              ) -> list[RunListing]:
    """Every run under ``root``, newest first; a damaged one is listed as damaged, with
    the sentence saying what is wrong, and never stops the others being listed.
    ``known``: listings read before (the Compare tab's); one whose files have the same
    modification times and sizes, and that is not training (a killed run's lock frees
    without a file changing), is kept instead of read again: at 200 runs of 100 epochs,
    showing the tab again costs 800 stats instead of parsing 20,000 lines of JSON."""
    known = known or {}
    listed = []
    for path in find_runs(Path(root)):
        signature = _signature(path)  # before reading: a change meanwhile reads it again
        before = known.get(path)
        if (before is not None and before.signature == signature
                and before.status != "training"):
            listed.append(before)
            continue
        listing = read_listing(path)
        listing.signature = signature
        listed.append(listing)
    return listed


def read_listing(path: Path) -> RunListing:
    store = RunStore(path)
    notes = store.notes()
    try:
        config = store.config()
        status = store.status
        summary = store.summary()
    except RunError as exc:  # a damaged file is this run's sentence
        log.warning("run %s is damaged: %s", store.path, exc)
        return RunListing(store, None, "damaged", RunSummary.of([]), notes, str(exc))
    return RunListing(store, config, status, summary, notes)


def _why(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc))[:200]


def is_epoch_record(record) -> bool:
    """A metrics.jsonl line as the trainer writes it: an object with a whole epoch
    number and the numbers every view reads."""
    return (isinstance(record, dict) and type(record.get("epoch")) is int
            and record["epoch"] >= 1 and all(
                isinstance(record.get(key), int | float) and not isinstance(record[key], bool)
                for key in ("val_top1", "ece")))


def unwritable(folder: Path, exc: OSError) -> str:
    """The sentence for a run or study folder this process cannot write."""
    return (f"{printable(Path(folder).name)} cannot be written ({exc.strerror or exc}); copy "
            "it to a folder you can write to continue it there.")


def ensure_runs_dir(runs_dir: str | Path | None) -> Path:
    """The runs folder, created if needed; RunError when it cannot hold runs (checked
    before any data is read, so a wrong folder fails at once)."""
    folder = Path(runs_dir).expanduser() if runs_dir else default_runs_dir()
    shown = printable(folder)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"the runs folder {shown} is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise RunError(f"runs cannot be written in {shown} ({exc.strerror or exc}); choose "
                       "another runs folder.") from None
    return folder


_HELD: set[int] = set()  # descriptors of the locks this process holds


class RunLock:
    """An operating-system lock on a folder while one process writes it (a run, or a
    study's output). The system releases it when the process ends, however it ends, so
    a kill -9 leaves no stale lock; the file names the holder for the refusal message."""

    NAME = ".lock"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.file = None

    def acquire(self) -> RunLock:
        try:
            handle = open_regular(self.folder / self.NAME, "a+", encoding="utf-8")
        except OSError as exc:
            raise RunError(unwritable(self.folder, exc)) from None
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunError(f"{printable(self.folder.name)} is being written by {holder}; open "
                           "it in the app to follow it, or wait until that process ends.")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self.file = handle
        _HELD.add(handle.fileno())
        return self

    def release(self) -> None:
        if self.file is not None:
            _HELD.discard(self.file.fileno())
            _unlock(self.file)
            self.file.close()
            self.file = None

    @classmethod
    def holder(cls, folder: Path) -> str | None:
        """Who holds the folder's lock now, or None when no process does."""
        path = Path(folder) / cls.NAME
        if not path.exists():
            return None
        try:
            handle = open_regular(path, encoding="utf-8")
        except OSError:
            return None
        with handle:
            if _try_lock(handle):
                _unlock(handle)
                return None
            return handle.read().strip() or "another process"


if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(handle) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _drop_inherited_locks() -> None:
        """In a forked child (a data-loader worker): point the held locks' descriptors at
        /dev/null. A flock belongs to the open file, which a fork shares: without this a
        loader worker orphaned by a kill -9 kept the run locked for seconds, and the
        resume was refused naming a dead process. The numbers stay valid, so the child's
        copies of the file objects close harmlessly."""
        if not _HELD:
            return
        null = os.open(os.devnull, os.O_RDWR)
        for fd in list(_HELD):
            try:
                os.dup2(null, fd)
            except OSError:
                pass
        os.close(null)
        _HELD.clear()

    os.register_at_fork(after_in_child=_drop_inherited_locks)

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint, loaded with ``weights_only=True``: never runs code from it."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise RunError(f"checkpoint {printable(path)} does not exist.")
    check_archive(path, RunError, "an olsdesk checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and allow-list errors all mean "not ours"
        raise RunError(f"{path.name} is not an olsdesk checkpoint that can be opened safely "
                       f"({type(exc).__name__}).") from exc
    return Checkpoint.from_state(state, path.name)
