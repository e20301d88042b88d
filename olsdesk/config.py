"""RunConfig: every setting of a training run, validated, with a JSON round-trip.

Importing this module pulls in neither torch nor Qt, so the CLI can validate a command
line before the heavy libraries load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

MODEL_NAMES = ("smallcnn", "resnet18", "resnet50", "mobilenet_v2", "vgg19")
LOSS_NAMES = ("ce", "ls", "tfkd", "ols")
LOSS_LABELS = {"ce": "hard labels (CE)", "ls": "label smoothing", "tfkd": "teacher-free KD",
               "ols": "online label smoothing"}
DEFAULT_ALPHA = {"tfkd": 0.95, "ols": 0.5}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A setting that cannot work; the message is one sentence for the user."""


@dataclass(frozen=True)
class RunConfig:
    """What to train, on what, and how. Defaults train the demo set in about a minute on a CPU."""

    data: str = "demo"
    split_csv: str | None = None
    model: str = "smallcnn"
    weights: str | None = None
    loss: str = "ols"
    alpha: float | None = None  # OLS and TF-KD weight; None takes the loss's default
    epsilon: float = 0.1  # label smoothing
    temperature: float = 6.0  # TF-KD
    ols_init: str = "uniform"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.003
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    image_size: int | None = None  # None: 64 for the demo set, 224 otherwise
    device: str = "auto"
    amp: bool = True  # mixed precision where the device supports it (CUDA)
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    demo_per_class: int = 200
    num_workers: int | None = None  # None: 0 for in-memory data, a few for files
    embedding_samples: int = 2000
    calibration_bins: int = 15

    @property
    def effective_alpha(self) -> float | None:
        return self.alpha if self.alpha is not None else DEFAULT_ALPHA.get(self.loss)

    @property
    def effective_image_size(self) -> int:
        if self.image_size is not None:
            return self.image_size
        return 64 if self.data == "demo" else 224

    def validated(self) -> RunConfig:
        """Self, or ConfigError naming the first setting that cannot work."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(bool(self.data), "choose a dataset: 'demo', an image folder or a MedMNIST .npz.")
        need(self.model in MODEL_NAMES, f"unknown model '{self.model}'; choose one of "
             f"{', '.join(MODEL_NAMES)}.")
        need(self.loss in LOSS_NAMES, f"unknown loss '{self.loss}'; choose one of "
             f"{', '.join(LOSS_NAMES)}.")
        need(self.alpha is None or 0.0 <= self.alpha <= 1.0, "alpha must be between 0 and 1.")
        need(0.0 <= self.epsilon < 1.0, "epsilon must be at least 0 and below 1.")
        need(self.temperature > 0, "the TF-KD temperature must be positive.")
        need(self.ols_init in ("uniform", "zeros"), "the OLS start must be 'uniform' or 'zeros'.")
        need(self.epochs >= 1, "train for at least one epoch.")
        need(self.batch_size >= 1, "the batch size must be at least 1.")
        need(self.lr > 0, "the learning rate must be positive.")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer '{self.optimizer}'; choose "
             f"{' or '.join(OPTIMIZERS)}.")
        need(0.0 <= self.momentum < 1.0, "momentum must be at least 0 and below 1.")
        need(self.weight_decay >= 0, "weight decay cannot be negative.")
        need(self.schedule in SCHEDULES, f"unknown schedule '{self.schedule}'; choose one of "
             f"{', '.join(SCHEDULES)}.")
        need(self.image_size is None or 16 <= self.image_size <= 1024,
             "the image size must be between 16 and 1024 pixels.")
        need(self.model != "vgg19" or self.effective_image_size >= 32,
             "VGG-19 halves its input five times, so it needs images of at least 32 pixels.")
        need(self.device in DEVICES, f"unknown device '{self.device}'; choose one of "
             f"{', '.join(DEVICES)}.")
        need(0.0 < self.val_fraction < 1.0, "the validation fraction must be between 0 and 1.")
        need(self.demo_per_class >= 2, "the demo set needs at least 2 images per class.")
        need(self.num_workers is None or self.num_workers >= 0,
             "the number of loader workers cannot be negative.")
        need(self.embedding_samples >= 10, "embed at least 10 validation samples.")
        need(2 <= self.calibration_bins <= 100, "use between 2 and 100 calibration bins.")
        if self.weights is not None:
            need(Path(self.weights).expanduser().is_file(),
                 f"weights file {self.weights} does not exist.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown settings in the run configuration: {', '.join(unknown)}.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> RunConfig:
        return replace(self, **changes)
