"""RunStore: one run's directory on disk.

```
<run>/config.json        RunConfig
<run>/run.json           class names, preprocessing, dataset summary, status
<run>/metrics.jsonl      one line of scalars per epoch
<run>/epochs/0001.npz    the epoch's arrays (soft labels, reliability, embedding, ...)
<run>/checkpoints/latest.pt, best.pt
<run>/log.txt            skipped files and other notes, newest last
```

Every file is written atomically (a temporary file renamed into place), so a reader,
such as the app replaying a run that is still training, never sees half a file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from olsdesk.config import RunConfig
from olsdesk.core.records import Checkpoint, RunInfo
from olsdesk.core.report import ARRAY_FIELDS, EpochReport
from olsdesk.errors import RunError

LATEST = "latest.pt"
BEST = "best.pt"


def default_runs_dir() -> Path:
    """Where runs go unless the user says otherwise: the user data dir."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("olsdesk", appauthor=False)) / "runs"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
               name: str | None = None) -> RunStore:
        """A new, uniquely named run directory holding ``config`` and ``info``."""
        runs_dir = Path(runs_dir).expanduser() if runs_dir else default_runs_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{config.model}-{config.loss}-s{config.seed}"
        for n in range(1000):
            path = runs_dir / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:
            raise RunError(f"cannot create a new run folder in {runs_dir}.")
        store = cls(path)
        store.write_config(config)
        store.write_info(info.with_status("created"))
        return store

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """An existing run, or RunError saying why the folder is not one."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise RunError(f"{path} is not a folder.")
        if not (path / "config.json").is_file() or not (path / "run.json").is_file():
            raise RunError(f"{path} is not an olsdesk run (no config.json and run.json).")
        return cls(path)

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
        return RunConfig.from_json((self.path / "config.json").read_text())

    def write_config(self, config: RunConfig) -> None:
        atomic_write_bytes(self.path / "config.json", config.to_json().encode())

    def info(self) -> RunInfo:
        """run.json; RunError when it is missing or damaged."""
        try:
            return RunInfo.from_dict(json.loads((self.path / "run.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{self.path.name}/run.json cannot be read ({exc}).") from None

    def write_info(self, info: RunInfo) -> None:
        atomic_write_bytes(self.path / "run.json", json.dumps(info.to_dict(), indent=2).encode())

    def set_status(self, status: str) -> None:
        self.write_info(self.info().with_status(status))

    @property
    def status(self) -> str:
        return self.info().status

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info().class_names

    # --- epochs ---------------------------------------------------------------
    def _epoch_file(self, epoch: int) -> Path:
        return self.path / "epochs" / f"{epoch:04d}.npz"

    def write_epoch(self, report: EpochReport) -> None:
        """The epoch's arrays, then its line in metrics.jsonl (so a line means complete)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **report.arrays())
        atomic_write_bytes(self._epoch_file(report.epoch), buffer.getvalue())
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(report.scalars(), allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def metrics(self) -> list[dict]:
        """The scalar lines written so far; a half-written last line is ignored."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        lines = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                break
        return lines

    def truncate_to(self, epoch: int) -> None:
        """Forget epochs after ``epoch`` (a resume restarts from that checkpoint)."""
        kept = [m for m in self.metrics() if m["epoch"] <= epoch]
        text = "".join(json.dumps(m) + "\n" for m in kept)
        atomic_write_bytes(self.path / "metrics.jsonl", text.encode())
        for file in (self.path / "epochs").glob("*.npz"):
            if int(file.stem) > epoch:
                file.unlink()

    def load_reports(self) -> list[EpochReport]:
        """Every complete epoch as an EpochReport, for replay."""
        names = self.class_names
        reports = []
        for scalars in self.metrics():
            file = self._epoch_file(int(scalars["epoch"]))
            if not file.exists():
                break
            with np.load(file, allow_pickle=False) as arrays:
                reports.append(EpochReport.from_parts(
                    scalars, {k: arrays[k] for k in ARRAY_FIELDS}, names))
        return reports

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
        atomic_write_bytes(self.checkpoint_path(LATEST), data)
        if best:
            atomic_write_bytes(self.checkpoint_path(BEST), data)

    def save_embedding_features(self, features: np.ndarray) -> None:
        """The latest epoch's embedded validation features (for t-SNE on demand)."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float16))
        atomic_write_bytes(self.path / "embedding_features.npy", buffer.getvalue())

    def embedding_features(self) -> np.ndarray | None:
        path = self.path / "embedding_features.npy"
        return np.load(path).astype(np.float32) if path.exists() else None

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint, loaded with ``weights_only=True``: never runs code from it."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and allow-list errors all mean "not ours"
        raise RunError(f"{path.name} is not an olsdesk checkpoint that can be opened safely "
                       f"({type(exc).__name__}).") from exc
    return Checkpoint.from_state(state, path.name)
