"""What a run writes to disk and reads back, as typed records with a format version.

``RunInfo`` is run.json; ``Checkpoint`` is checkpoints/latest.pt and best.pt. Each is
written from and read into one dataclass, so the trainer, the predictor, the CLI and
the app never rebuild string-keyed dicts of their own.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from olsdesk import __version__
from olsdesk.config import MODEL_NAMES, RunConfig
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.errors import ConfigError, RunError

RUN_INFO_FORMAT = 2  # 2: the held-out file names live in split.json.gz, not in run.json
CHECKPOINT_FORMAT = "olsdesk-checkpoint-1"
STATUSES = ("created", "training", "finished", "stopped", "failed")


def map_tensors(state, tensor, other=lambda value: value):
    """A state dict (nested dicts, lists and tuples) with ``tensor(t)`` for each tensor in
    it and ``other(v)`` for every other value; a dict's ``_metadata``, which
    ``load_state_dict`` reads, kept."""
    import torch

    if isinstance(state, torch.Tensor):
        return tensor(state)
    if isinstance(state, dict):
        out = type(state)((k, map_tensors(v, tensor, other)) for k, v in state.items())
        if hasattr(state, "_metadata"):
            out._metadata = copy.deepcopy(state._metadata)
        return out
    if isinstance(state, list | tuple):
        return type(state)(map_tensors(v, tensor, other) for v in state)
    return other(state)


def _standard_layout(tensor):
    import torch

    return tensor.contiguous(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class DatasetSummary:
    """Where the data came from and how it was split. Training numbers are on train,
    every epoch's metrics on val; test is read only by evaluation."""

    source: str
    kind: str
    channels: int
    train_images: int
    val_images: int
    per_class: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # train, val, test
    test_images: int = 0
    test_source: str = ""  # e.g. "held out from the data", "RadiologyAI_test.csv"

    def describe(self, classes: int) -> str:
        test = f", {self.test_images} test" if self.test_images else ""
        return (f"{self.source} ({self.train_images} training, {self.val_images} "
                f"validation{test} images, {classes} classes)")


@dataclass(frozen=True)
class RunInfo:
    """run.json: what a run was trained on, how its inputs were prepared, its status."""

    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    dataset: DatasetSummary
    # the held-out file names: in memory only (RunStore.info(names=True) reads them from
    # split.json.gz); format 1 (olsdesk 0.3) kept them in run.json
    validation_names: tuple[str, ...] = ()
    test_names: tuple[str, ...] = ()
    device: str = ""
    # the starting weights: core.weights.LoadReport.to_dict() (name, file, sha256, tensors
    # loaded of the backbone's, the parts left fresh); None when trained from scratch
    weights: dict | None = None
    # what the data audit found (core.audit.AuditReport.to_dict()); None when not audited
    audit: dict | None = None
    # which split each recorded number is on (for a reader of run.json and metrics.jsonl)
    metrics_split: dict[str, str] = field(default_factory=lambda: {
        "train_loss, train_top1, train_top5": "train",
        "every other number in metrics.jsonl (and the app's panels)": "validation",
        "olsdesk evaluate": "test"})
    status: str = "created"
    created: float = field(default_factory=time.time)
    olsdesk_version: str = __version__
    format: int = RUN_INFO_FORMAT

    def with_status(self, status: str) -> RunInfo:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        return replace(self, status=status)

    def to_dict(self) -> dict:
        out = asdict(replace(self, validation_names=(), test_names=()))
        del out["validation_names"], out["test_names"]  # split.json.gz's
        out["format"] = RUN_INFO_FORMAT  # rewritten (a status change): today's format
        out["class_names"] = list(self.class_names)
        out["dataset"]["per_class"] = {k: list(v) for k, v in self.dataset.per_class.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunInfo:
        """run.json's contents; KeyError/TypeError/ValueError on a damaged file."""
        dataset = dict(data["dataset"])
        dataset["per_class"] = {k: (tuple(v) + (0, 0, 0))[:3]  # older runs: (train, val)
                                for k, v in dataset.get("per_class", {}).items()}
        known = {f.name for f in fields(DatasetSummary)}
        return cls(
            class_names=tuple(data["class_names"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            dataset=DatasetSummary(**{k: v for k, v in dataset.items() if k in known}),
            validation_names=tuple(data.get("validation_names", ())),
            test_names=tuple(data.get("test_names", ())),
            device=str(data.get("device", "")),
            weights=data["weights"] if isinstance(data.get("weights"), dict) else None,
            audit=data["audit"] if isinstance(data.get("audit"), dict) else None,
            status=str(data.get("status", "created")),
            created=float(data.get("created", 0.0)),
            olsdesk_version=str(data.get("olsdesk_version", "")),
            format=int(data.get("format", RUN_INFO_FORMAT)),
        )


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint: enough to resume training exactly and to predict with the model."""

    epoch: int
    model_name: str
    class_names: tuple[str, ...]
    in_channels: int
    preprocessing: Preprocessing
    config: RunConfig
    model: dict[str, Any] = field(repr=False)
    optimizer: dict[str, Any] = field(default_factory=dict, repr=False)
    scheduler: dict[str, Any] = field(default_factory=dict, repr=False)
    loss: dict[str, Any] = field(default_factory=dict, repr=False)
    scaler: dict[str, Any] = field(default_factory=dict, repr=False)
    best_top1: float = -1.0
    temperature: float = 1.0  # fitted on the validation set at this epoch's end
    # split conformal's calibration on the same validation images (conformal.Calibration's
    # arrays, as tensors); empty in checkpoints from before olsdesk kept it
    conformal: dict[str, Any] = field(default_factory=dict, repr=False)
    # the unfamiliar-input detector fitted on the same validation images (ood.Familiarity's
    # arrays); empty in checkpoints from before olsdesk kept it
    ood: dict[str, Any] = field(default_factory=dict, repr=False)
    # vector scaling and histogram binning fitted on the same validation images
    # (calibration.Recalibration's arrays); empty in checkpoints from before olsdesk kept them
    recalibration: dict[str, Any] = field(default_factory=dict, repr=False)
    olsdesk_version: str = __version__

    @property
    def calibration(self):
        """The conformal Calibration, or None (an older checkpoint)."""
        from olsdesk.core.conformal import Calibration

        if not self.conformal:
            return None
        return Calibration.from_arrays(_numpy(self.conformal))

    @property
    def familiarity(self):
        """The unfamiliar-input detector (ood.Familiarity), or None (an older checkpoint)."""
        from olsdesk.core.ood import Familiarity

        if not self.ood:
            return None
        return Familiarity.from_arrays(_numpy(self.ood))

    @property
    def recalibrators(self):
        """calibration.Recalibration: the temperature, and vector scaling and histogram
        binning where the checkpoint holds them."""
        from olsdesk.core.calibration import Recalibration

        return Recalibration.from_arrays(self.temperature, _numpy(self.recalibration))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_state(self) -> dict:
        """Plain containers and tensors only, so ``torch.load(weights_only=True)`` reads it."""
        return {
            "format": CHECKPOINT_FORMAT, "olsdesk_version": self.olsdesk_version,
            "epoch": self.epoch, "model_name": self.model_name,
            "num_classes": self.num_classes, "in_channels": self.in_channels,
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(), "config": self.config.to_dict(),
            # training may hold its weights and their optimiser state channels-last
            # (core.device.memory_format); the file holds them in the standard layout,
            # the same whatever the device, so that a script's .view() of a weight works
            "model": map_tensors(self.model, _standard_layout),
            "optimizer": map_tensors(self.optimizer, _standard_layout),
            "scheduler": self.scheduler,
            "loss_name": self.config.loss, "loss": self.loss, "scaler": self.scaler,
            "best_top1": self.best_top1, "temperature": self.temperature,
            "conformal": self.conformal, "ood": self.ood,
            "recalibration": self.recalibration,
        }

    @classmethod
    def from_state(cls, state: object, name: str) -> Checkpoint:
        """The checkpoint in ``state``; RunError names what is wrong with file ``name``."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"{name} is not an olsdesk checkpoint.")
        try:
            # the containers' types first: str() of a 3000-deep list recurses until Python
            # gives up, and a tensor where a dict belongs fails in torch, not here
            for key in ("config", "preprocessing"):
                if not isinstance(state.get(key), dict):
                    raise TypeError(f"its {key} is not a set of named values")
            names = state.get("class_names")
            if not isinstance(names, list | tuple) or not all(isinstance(c, str) for c in names):
                raise TypeError("its class names are not a list of names")
            checkpoint = cls(
                epoch=int(state["epoch"]), model_name=str(state["model_name"]),
                class_names=tuple(names),
                in_channels=int(state["in_channels"]),
                preprocessing=Preprocessing.from_dict(state["preprocessing"]),
                config=RunConfig.from_dict(state["config"]),
                model=state["model"], optimizer=state.get("optimizer") or {},
                scheduler=state.get("scheduler") or {}, loss=state.get("loss") or {},
                scaler=state.get("scaler") or {},
                best_top1=float(state.get("best_top1", -1.0)),
                temperature=float(state.get("temperature", 1.0)),
                conformal=state.get("conformal") or {},
                ood=state.get("ood") or {},
                recalibration=state.get("recalibration") or {},
                olsdesk_version=str(state.get("olsdesk_version", "")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise RunError(f"{name} is an incomplete olsdesk checkpoint "
                           f"({type(exc).__name__}: {exc}).") from None
        try:
            checkpoint.validate()
        except ValueError as exc:
            raise RunError(f"{name} is damaged or was edited: {exc}.") from None
        return checkpoint

    def validate(self) -> None:
        """ValueError naming the first field whose type or range no olsdesk run writes."""
        self.preprocessing.validated()
        if self.model_name not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model_name!r}")
        names = self.class_names
        if not 2 <= len(names) <= 100_000 or len(set(names)) != len(names) or not all(names):
            raise ValueError("the class list must hold 2 to 100,000 distinct, non-empty names")
        if self.in_channels not in (1, 3) or self.in_channels != self.preprocessing.channels:
            raise ValueError("the input channels do not match the preprocessing")
        if not (math.isfinite(self.temperature) and 0.01 <= self.temperature <= 100):
            raise ValueError(f"temperature {self.temperature} is out of range")
        if self.conformal:
            try:
                self.calibration  # noqa: B018 - ValueError when its arrays disagree
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"its conformal calibration is incomplete ({exc})") from None
        if self.ood:
            try:
                self.familiarity  # noqa: B018 - ValueError when its arrays disagree
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"its unfamiliar-input detector is incomplete ({exc})") from None
        if self.recalibration:
            try:
                self.recalibrators  # noqa: B018 - TypeError on unknown or odd arrays
            except (TypeError, AttributeError) as exc:
                raise ValueError(f"its recalibration is incomplete ({exc})") from None
        if not 0 <= self.epoch <= 100_000:
            raise ValueError(f"epoch {self.epoch} is out of range")
        if not isinstance(self.model, dict) or not self.model:
            raise ValueError("it holds no model weights")
        import torch

        if not all(torch.isfinite(t).all() for t in self.model.values()
                   if isinstance(t, torch.Tensor) and t.is_floating_point()):
            raise ValueError("its model weights hold NaN or infinite values (the training "
                             "diverged, or the file was edited)")
        try:
            self.config.validated()
        except ConfigError as exc:
            raise ValueError(f"its stored settings cannot be used: {str(exc).rstrip('.')}") from None


def _numpy(arrays: dict) -> dict:
    """A checkpoint's tensors as numpy arrays (numbers and strings as they are)."""
    return {k: v.numpy() if hasattr(v, "numpy") else v for k, v in arrays.items()}
