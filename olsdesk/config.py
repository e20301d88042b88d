"""RunConfig: every setting of a training run, validated, with a JSON round-trip.

Importing this module pulls in neither torch nor Qt, so the CLI can validate a command
line before the heavy libraries load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from olsdesk.errors import ConfigError

MODEL_NAMES = ("smallcnn", "resnet18", "resnet50", "mobilenet_v2", "vgg19")
LOSS_NAMES = ("ce", "ls", "tfkd", "ols")
LOSS_LABELS = {"ce": "hard labels (CE)", "ls": "label smoothing", "tfkd": "teacher-free KD",
               "ols": "online label smoothing"}
DEFAULT_ALPHA = {"tfkd": 0.95, "ols": 0.5}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")


def loss_alpha(loss: str, alpha: float | None) -> float | None:
    """α as ``loss`` uses it: ``alpha`` when set, else the loss's default; None for a loss
    without one (hard labels, label smoothing)."""
    if loss not in DEFAULT_ALPHA:
        return None
    return DEFAULT_ALPHA[loss] if alpha is None else alpha


def setting(default, help: str, *, choices: tuple[str, ...] | None = None,
            metavar: str | None = None):
    """A RunConfig field with the help text (and choices) the CLI and the app show."""
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "metavar": metavar})


@dataclass(frozen=True)
class RunConfig:
    """What to train, on what, and how. Defaults train the demo set in about a minute on a CPU.

    Each field's help text, choices and default are stated here once; ``olsdesk train``
    and ``olsdesk compare`` generate their options from them.
    """

    data: str = setting("demo", "'demo', an image folder (one sub-folder a class, "
                        "RadImageNet's nested layout too) or a MedMNIST .npz", metavar="PATH")
    split_csv: str | None = setting(None, "folder with train/val split CSVs (filename,label), "
                                    "RadImageNet style; without it a stratified split is made",
                                    metavar="DIR")
    model: str = setting("smallcnn", "the network", choices=MODEL_NAMES)
    weights: str | None = setting(None, "optional local state-dict file to start from "
                                  "(ImageNet or RadImageNet weights); nothing is downloaded",
                                  metavar="FILE")
    loss: str = setting("ols", "training objective: hard labels, label smoothing, teacher-free "
                        "KD or online label smoothing", choices=LOSS_NAMES)
    alpha: float | None = setting(None, "OLS: weight of the hard-label term; TF-KD: weight of "
                                  "the virtual teacher (default 0.5 for OLS, 0.95 for TF-KD)")
    epsilon: float = setting(0.1, "label smoothing: share of the target spread over all classes")
    temperature: float = setting(6.0, "TF-KD temperature")
    ols_init: str = setting("uniform", "OLS: the soft-label matrix of the first epoch",
                            choices=("uniform", "zeros"))
    epochs: int = setting(10, "epochs to train (with --resume: a new total)")
    batch_size: int = setting(64, "images a training step")
    lr: float = setting(0.003, "peak learning rate")
    optimizer: str = setting("adamw", "sgd (momentum, as the published recipe) or adamw",
                             choices=OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(5e-4, "L2 weight decay")
    schedule: str = setting("cosine", "learning-rate schedule: cosine to zero, step (x0.1 at 45 "
                            "% and 80 % of the epochs) or constant", choices=SCHEDULES)
    image_size: int | None = setting(None, "model input size in pixels (default 64 for the demo "
                                     "set, 224 otherwise)")
    device: str = setting("auto", "auto takes CUDA, then Apple MPS, then the CPU",
                          choices=DEVICES)
    amp: bool = setting(True, "mixed precision where the device supports it (CUDA; bf16 "
                        "where the GPU has it)")
    sync_bn: bool = setting(False, "with several processes (torchrun, --gpus): synchronise "
                            "BatchNorm statistics across them")
    compile: bool = setting(False, "compile the model with torch.compile (faster steps on a "
                            "GPU after a slow first one)")
    seed: int = setting(0, "seed of the weights, batches and augmentation")
    split_seed: int = setting(0, "seed of the train/validation split")
    val_fraction: float = setting(0.15, "share of each class held out for validation (model "
                                  "selection, the temperature) when the data has no split")
    test_fraction: float = setting(0.15, "share of each class held out as the test split, "
                                   "touched only by evaluation (0: none)")
    test_data: str | None = setting(None, "an external test set (another hospital): an image "
                                    "folder with the run's class folders; replaces the "
                                    "held-out test split", metavar="DIR")
    demo_per_class: int = setting(200, "demo set: images a class")
    num_workers: int | None = setting(None, "data-loader processes (default: on a GPU, "
                                      "one per core but one, up to 16; on the CPU, 0 for "
                                      "in-memory data, up to 4 for files)")
    embedding_samples: int = setting(2000, "validation images in the embedding view")
    calibration_bins: int = setting(15, "bins of the reliability diagram and ECE")

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

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name.replace('_', ' ')} must be a finite number, "
                                  f"not {value}.")
        need(bool(self.data), "choose a dataset: 'demo', an image folder or a MedMNIST .npz.")
        need(self.model in MODEL_NAMES, f"unknown model '{self.model}'; choose one of "
             f"{', '.join(MODEL_NAMES)}.")
        need(self.loss in LOSS_NAMES, f"unknown loss '{self.loss}'; choose one of "
             f"{', '.join(LOSS_NAMES)}.")
        need(self.alpha is None or 0.0 <= self.alpha <= 1.0, "alpha must be between 0 and 1.")
        need(0.0 <= self.epsilon < 1.0, "epsilon must be at least 0 and below 1.")
        need(0 < self.temperature <= 1000, "the TF-KD temperature must be positive and at most "
             "1000.")
        need(self.ols_init in ("uniform", "zeros"), "the OLS start must be 'uniform' or 'zeros'.")
        need(1 <= self.epochs <= 100_000, "train for 1 to 100,000 epochs.")
        need(1 <= self.batch_size <= 65_536, "the batch size must be between 1 and 65,536.")
        need(0 < self.lr <= 10, "the learning rate must be positive and at most 10.")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer '{self.optimizer}'; choose "
             f"{' or '.join(OPTIMIZERS)}.")
        need(0.0 <= self.momentum < 1.0, "momentum must be at least 0 and below 1.")
        need(0 <= self.weight_decay <= 1, "weight decay must be between 0 and 1.")
        need(self.schedule in SCHEDULES, f"unknown schedule '{self.schedule}'; choose one of "
             f"{', '.join(SCHEDULES)}.")
        need(self.image_size is None or 16 <= self.image_size <= 1024,
             "the image size must be between 16 and 1024 pixels.")
        need(self.model != "vgg19" or self.effective_image_size >= 32,
             "VGG-19 halves its input five times, so it needs images of at least 32 pixels.")
        need(self.device in DEVICES, f"unknown device '{self.device}'; choose one of "
             f"{', '.join(DEVICES)}.")
        need(0 <= self.seed < 2**32 and 0 <= self.split_seed < 2**32,
             "seeds must be whole numbers from 0 to 4294967295.")
        need(0.0 < self.val_fraction < 1.0, "the validation fraction must be between 0 and 1.")
        need(0.0 <= self.test_fraction < 1.0, "the test fraction must be at least 0 and below 1.")
        need(self.val_fraction + self.test_fraction < 1.0,
             "the validation and test fractions together must leave images to train on.")
        if self.test_data is not None:
            need(Path(self.test_data).expanduser().is_dir(),
                 f"test data {self.test_data} is not a folder.")
        need(2 <= self.demo_per_class <= 100_000,
             "the demo set takes 2 to 100,000 images per class.")
        need(self.num_workers is None or 0 <= self.num_workers <= 256,
             "the number of loader workers must be between 0 and 256.")
        need(10 <= self.embedding_samples <= 1_000_000,
             "embed between 10 and 1,000,000 validation samples.")
        need(2 <= self.calibration_bins <= 100, "use between 2 and 100 calibration bins.")
        if self.weights is not None:
            need(Path(self.weights).expanduser().is_file(),
                 f"weights file {self.weights} does not exist.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """A stored configuration; one written before olsdesk held out a test split keeps
        its two-way split (it resumes and evaluates on the images it was split into)."""
        if "val_fraction" in data and "test_fraction" not in data:
            data = {**data, "test_fraction": 0.0}
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
