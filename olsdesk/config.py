"""RunConfig: every setting of a training run, validated, with a JSON round-trip.

Importing this module pulls in neither torch nor Qt, so the CLI can validate a command
line before the heavy libraries load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from olsdesk.errors import ConfigError, printable

MODEL_NAMES = ("smallcnn", "resnet18", "resnet50", "mobilenet_v2", "vgg19")
LOSS_NAMES = ("ce", "ls", "tfkd", "ols", "focal", "mbls")
LOSS_LABELS = {"ce": "hard labels (CE)", "ls": "label smoothing", "tfkd": "teacher-free KD",
               "ols": "online label smoothing", "focal": "focal loss",
               "mbls": "margin-based LS"}
PAPER_LOSSES = ("ce", "ls", "tfkd", "ols")  # the OLS paper's comparison: compare's default
DEFAULT_ALPHA = {"tfkd": 0.95, "ols": 0.5}
SAMPLINGS = ("natural", "balanced")
OLS_MIN_CORRECT = 2  # measured: docs/ALGORITHMS.md, "A row from a handful of images"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda", "mps")
# recalibrators fitted on validation at every epoch end (olsdesk evaluate --recalibration)
RECALIBRATORS = ("temperature", "vector", "histogram")
RECALIBRATOR_LABELS = {"none": "none (raw)", "temperature": "temperature scaling",
                       "vector": "vector scaling", "histogram": "histogram binning"}
# split-conformal scores of the prediction sets (core/conformal.py)
CONFORMAL_METHODS = ("raps", "aps", "lac")
# bootstrap resamples of the test images: intervals settle well before; each costs memory
# for every class and metric (1e8 got evaluate killed)
MAX_RESAMPLES = 10_000


def loss_alpha(loss: str, alpha: float | None) -> float | None:
    """α as ``loss`` uses it: ``alpha`` when set, else the loss's default; None for a loss
    without one (hard labels, label smoothing)."""
    if loss not in DEFAULT_ALPHA:
        return None
    return DEFAULT_ALPHA[loss] if alpha is None else alpha


def setting(default, help: str, *, choices: tuple[str, ...] | None = None,
            metavar: str | None = None, label: str = "", group: str = "more",
            bounds: tuple[float, float] | None = None, open_bounds: str = "",
            step: float | None = None, decimals: int = 0, uses: dict | None = None,
            choice_labels: dict | None = None):
    """A RunConfig field with what the CLI and the app's settings form show of it, stated
    once: its help text and choices, the form's label and group, the closed interval
    ``bounds`` (``open_bounds`` "lo", "hi" or "both" excludes an end) that ``validated``
    enforces and the form offers, the form's step and decimals, and ``uses``: the values
    of other settings under which this one has an effect (``{"loss": ("ls",)}``)."""
    return field(default=default, metadata={
        "help": help, "choices": choices, "metavar": metavar, "label": label,
        "group": group, "bounds": bounds, "open_bounds": open_bounds, "step": step,
        "decimals": decimals, "uses": uses or {}, "choice_labels": choice_labels or {}})


def in_bounds(name: str, value) -> bool:
    """``value`` lies within RunConfig field ``name``'s stated bounds (True without any)."""
    meta = RunConfig.__dataclass_fields__[name].metadata
    if meta["bounds"] is None:
        return True
    lo, hi = meta["bounds"]
    ends = meta["open_bounds"]
    above = value > lo if ends in ("lo", "both") else value >= lo
    below = value < hi if ends in ("hi", "both") else value <= hi
    return above and below


_TYPE_WORDS = {"str": "text", "int": "a whole number", "float": "a number",
               "bool": "true or false"}


def _has_type(value, annotation: str) -> bool:
    """``value`` is of the field type ``annotation`` ("int", "float | None"...): a
    config.json edited by hand or a crafted checkpoint holds anything JSON can."""
    kinds = annotation.split(" | ")
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return "int" in kinds or "float" in kinds
    if isinstance(value, float):
        return "float" in kinds
    return isinstance(value, str) and "str" in kinds


@dataclass(frozen=True)
class RunConfig:
    """What to train, on what, and how. Defaults train the demo set in about a minute on a CPU.

    Each field's help text, choices and default are stated here once; ``olsdesk train``
    and ``olsdesk compare`` generate their options from them.
    """

    data: str = setting("demo", "'demo', an image folder (one sub-folder a class, "
                        "RadImageNet's nested layout too) or a MedMNIST .npz", metavar="PATH",
                        label="Data", group="data")
    split_csv: str | None = setting(None, "folder with train/val/test split CSVs "
                                    "(filename,label), RadImageNet style; without it a "
                                    "stratified split is made", metavar="DIR",
                                    label="Split CSVs", group="data")
    model: str = setting("smallcnn", "the network", choices=MODEL_NAMES, label="Model",
                         group="main")
    weights: str | None = setting(None, "weights to start from: a state-dict file "
                                  "(RadImageNet's PyTorch weights, say) or imagenet "
                                  "(torchvision's ImageNet weights for the model, from its "
                                  "cache, downloaded when online)", metavar="FILE|imagenet",
                                  label="Start from", group="main")
    allow_partial_weights: bool = setting(
        False, "start from weights that leave some of the model's convolutions unmatched "
        "(a file made for another architecture; those layers start fresh)",
        label="Partial weights")
    loss: str = setting("ols", "training objective: hard labels, label smoothing, teacher-free "
                        "KD, online label smoothing, focal loss or margin-based label "
                        "smoothing", choices=LOSS_NAMES, label="Loss",
                        group="main", choice_labels=LOSS_LABELS)
    alpha: float | None = setting(None, "OLS: weight of the hard-label term; TF-KD: weight of "
                                  "the virtual teacher (default 0.5 for OLS, 0.95 for TF-KD)",
                                  label="α", group="main", bounds=(0.0, 1.0), step=0.05,
                                  decimals=3, uses={"loss": ("ols", "tfkd")})
    epsilon: float = setting(0.1, "label smoothing: share of the target spread over all classes",
                             label="ε", group="main", bounds=(0.0, 1.0), open_bounds="hi",
                             step=0.05, decimals=3, uses={"loss": ("ls",)})
    temperature: float = setting(6.0, "TF-KD temperature", label="T", group="main",
                                 bounds=(0.0, 1000.0), open_bounds="lo", step=1.0, decimals=2,
                                 uses={"loss": ("tfkd",)})
    ols_init: str = setting("uniform", "OLS: the soft-label matrix of the first epoch",
                            choices=("uniform", "zeros"), label="OLS start",
                            uses={"loss": ("ols",)})
    ols_min_correct: int = setting(
        OLS_MIN_CORRECT, "OLS: a class with fewer correct training predictions in an epoch "
        "gets the uniform row for the next (a row averaged over a handful of images is "
        "noise; docs/ALGORITHMS.md gives the measurement)", label="OLS min. correct",
        bounds=(1, 1_000_000), uses={"loss": ("ols",)})
    focal_gamma: float | None = setting(
        None, "focal loss: the focusing exponent γ; auto is FLSD-53 (γ = 5 for an image "
        "whose true-class probability is below 0.2, 3 otherwise)", label="γ", group="main",
        bounds=(0.0, 100.0), step=0.5, decimals=2, uses={"loss": ("focal",)})
    mbls_margin: float = setting(10.0, "margin-based LS: the margin m on the distances of "
                                 "each logit to the largest", label="MbLS margin",
                                 bounds=(0.0, 1000.0), open_bounds="lo", step=1.0,
                                 decimals=2, uses={"loss": ("mbls",)})
    mbls_lambda: float = setting(0.1, "margin-based LS: the weight λ of the margin penalty",
                                 label="MbLS λ", bounds=(0.0, 100.0), step=0.05,
                                 decimals=3, uses={"loss": ("mbls",)})
    sampling: str = setting("natural", "training batches: natural (every image once an "
                            "epoch) or balanced (classes drawn equally often, images within "
                            "a class with replacement)", choices=SAMPLINGS, label="Sampling",
                            choice_labels={"natural": "natural", "balanced": "class-balanced"})
    class_weights: bool = setting(False, "weight each image's loss by its class's inverse "
                                  "training frequency (N / (K n_c))", label="Class weights")
    epochs: int = setting(10, "epochs to train (with --resume: a new total)", label="Epochs",
                          group="main", bounds=(1, 100_000))
    batch_size: int = setting(64, "images a training step", label="Batch size", group="main",
                              bounds=(1, 65_536))
    lr: float = setting(0.003, "peak learning rate", label="Learning rate", group="main",
                        bounds=(0.0, 10.0), open_bounds="lo", step=0.0005, decimals=5)
    optimizer: str = setting("adamw", "sgd (momentum, as the published recipe) or adamw",
                             choices=OPTIMIZERS, label="Optimizer", group="main",
                             choice_labels={"sgd": "SGD (momentum)", "adamw": "AdamW"})
    momentum: float = setting(0.9, "SGD momentum", label="Momentum", bounds=(0.0, 1.0),
                              open_bounds="hi", step=0.05, decimals=3,
                              uses={"optimizer": ("sgd",)})
    weight_decay: float = setting(5e-4, "L2 weight decay", label="Weight decay",
                                  bounds=(0.0, 1.0), step=1e-4, decimals=5)
    schedule: str = setting("cosine", "learning-rate schedule: cosine to zero, step (x0.1 at 45 "
                            "% and 80 % of the epochs) or constant", choices=SCHEDULES,
                            label="Schedule", group="main",
                            choice_labels={"cosine": "cosine", "step": "step (×0.1 at 45 %, "
                                           "80 %)", "constant": "constant"})
    image_size: int | None = setting(None, "model input size in pixels (default 64 for the demo "
                                     "set, 224 otherwise)", label="Image size", group="main",
                                     bounds=(16, 1024))
    device: str = setting("auto", "auto takes CUDA, then Apple MPS, then the CPU",
                          choices=DEVICES, label="Device", group="main")
    amp: bool = setting(True, "mixed precision where the device supports it (CUDA; bf16 "
                        "where the GPU has it)", label="Mixed precision")
    sync_bn: bool = setting(False, "with several processes (torchrun, --gpus): synchronise "
                            "BatchNorm statistics across them", label="Sync BatchNorm")
    compile: bool = setting(False, "compile the model with torch.compile (faster steps on a "
                            "GPU after a slow first one)", label="torch.compile")
    device_preprocessing: bool = setting(
        False, "on a GPU: loader workers send 8-bit images as decoded (uint8) and the GPU "
        "resizes, crops, flips and scales each batch (less CPU work and a quarter of the "
        "bytes a step; tensors equal to the CPU's to float rounding)",
        label="Preprocess on the GPU")
    seed: int = setting(0, "seed of the weights, batches and augmentation", label="Seed",
                        group="main", bounds=(0, 2**32 - 1))
    split_seed: int = setting(0, "seed of the train/validation split", label="Split seed",
                              bounds=(0, 2**32 - 1))
    val_fraction: float = setting(0.15, "share of each class held out for validation (model "
                                  "selection, the temperature) when the data has no split",
                                  label="Validation share", bounds=(0.0, 1.0),
                                  open_bounds="both", step=0.05, decimals=3)
    test_fraction: float = setting(0.15, "share of each class held out as the test split, "
                                   "touched only by evaluation (0: none)", label="Test share",
                                   bounds=(0.0, 1.0), open_bounds="hi", step=0.05, decimals=3)
    test_data: str | None = setting(None, "an external test set (another hospital): an image "
                                    "folder with the run's class folders; replaces the "
                                    "held-out test split", metavar="DIR",
                                    label="External test folder")
    group_pattern: str | None = setting(
        None, "a regular expression finding each image's group (the patient, the study) in "
        "its path, e.g. 'patient_([0-9]+)': its first capture group (or the whole match) "
        "names the group, and every group stays in one split; a split CSV's group column "
        "does the same for given splits", metavar="REGEX", label="Group pattern")
    audit_data: bool = setting(True, "hash every file when the data is opened: exact "
                               "duplicates within and across classes, copies across "
                               "train/val/test (a leak), constant and unreadable images; "
                               "in run.json and the data summary", label="Audit the data")
    drop_duplicates: bool = setting(False, "drop the validation and test images whose "
                                    "content is also in an earlier split (found by the "
                                    "audit)", label="Drop leaked copies",
                                    uses={"audit_data": (True,)})
    demo_per_class: int = setting(200, "demo set: images a class", label="Demo images a class",
                                  bounds=(2, 100_000), uses={"data": ("demo",)})
    num_workers: int | None = setting(None, "data-loader processes (default: on a GPU, "
                                      "one per core but one, up to 16; on the CPU, 0 for "
                                      "in-memory data, up to 4 for files)",
                                      label="Loader workers", bounds=(0, 256))
    embedding_samples: int = setting(2000, "validation images in the embedding view",
                                     label="Embedded images", bounds=(10, 1_000_000))
    calibration_bins: int = setting(15, "bins of the reliability diagram and ECE",
                                    label="Calibration bins", bounds=(2, 100))

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
            if not _has_type(value, f.type):
                kind = _TYPE_WORDS[f.type.split(" | ")[0]]
                raise ConfigError(f"{f.name.replace('_', ' ')} must be {kind}, not "
                                  f"{printable(repr(value))[:60]}.")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name.replace('_', ' ')} must be a finite number, "
                                  f"not {value}.")

        def within(name: str) -> bool:
            """The field's value lies in its stated bounds (None: its default applies)."""
            value = getattr(self, name)
            return value is None or in_bounds(name, value)
        need(bool(self.data), "choose a dataset: 'demo', an image folder or a MedMNIST .npz.")
        need(self.model in MODEL_NAMES, f"unknown model '{self.model}'; choose one of "
             f"{', '.join(MODEL_NAMES)}.")
        need(self.loss in LOSS_NAMES, f"unknown loss '{self.loss}'; choose one of "
             f"{', '.join(LOSS_NAMES)}.")
        need(within("alpha"), "alpha must be between 0 and 1.")
        need(within("epsilon"), "epsilon must be at least 0 and below 1.")
        need(within("temperature"), "the TF-KD temperature must be positive and at most "
             "1000.")
        need(self.ols_init in ("uniform", "zeros"), "the OLS start must be 'uniform' or 'zeros'.")
        need(within("ols_min_correct"), "OLS needs at least 1 correct prediction to build a "
             "row (at most 1,000,000).")
        need(self.sampling in SAMPLINGS, f"unknown sampling '{self.sampling}'; choose "
             f"{' or '.join(SAMPLINGS)}.")
        need(within("focal_gamma"), "the focal loss's gamma must be between 0 and 100.")
        need(within("mbls_margin"), "the MbLS margin must be positive and at most 1000.")
        need(within("mbls_lambda"), "the MbLS lambda must be between 0 and 100.")
        need(within("epochs"), "train for 1 to 100,000 epochs.")
        need(within("batch_size"), "the batch size must be between 1 and 65,536.")
        need(within("lr"), "the learning rate must be positive and at most 10.")
        need(self.optimizer in OPTIMIZERS, f"unknown optimizer '{self.optimizer}'; choose "
             f"{' or '.join(OPTIMIZERS)}.")
        need(within("momentum"), "momentum must be at least 0 and below 1.")
        need(within("weight_decay"), "weight decay must be between 0 and 1.")
        need(self.schedule in SCHEDULES, f"unknown schedule '{self.schedule}'; choose one of "
             f"{', '.join(SCHEDULES)}.")
        need(within("image_size"),
             "the image size must be between 16 and 1024 pixels.")
        need(self.model != "vgg19" or self.effective_image_size >= 32,
             "VGG-19 halves its input five times, so it needs images of at least 32 pixels.")
        need(self.device in DEVICES, f"unknown device '{self.device}'; choose one of "
             f"{', '.join(DEVICES)}.")
        need(within("seed") and within("split_seed"),
             "seeds must be whole numbers from 0 to 4294967295.")
        need(within("val_fraction"), "the validation fraction must be between 0 and 1.")
        need(within("test_fraction"), "the test fraction must be at least 0 and below 1.")
        need(self.val_fraction + self.test_fraction < 1.0,
             "the validation and test fractions together must leave images to train on.")
        if self.test_data is not None:
            need(Path(self.test_data).expanduser().is_dir(),
                 f"test data {self.test_data} is not a folder.")
        need(within("demo_per_class"),
             "the demo set takes 2 to 100,000 images per class.")
        need(within("num_workers"),
             "the number of loader workers must be between 0 and 256.")
        need(within("embedding_samples"),
             "embed between 10 and 1,000,000 validation samples.")
        need(within("calibration_bins"), "use between 2 and 100 calibration bins.")
        if self.group_pattern:
            import re

            try:
                re.compile(self.group_pattern)
            except re.error as exc:
                raise ConfigError(f"the group pattern {self.group_pattern!r} is not a "
                                  f"regular expression ({exc}).") from None
        need(self.audit_data or not self.drop_duplicates,
             "dropping leaked copies needs the data audit (audit_data).")
        if self.weights == "imagenet":
            need(self.model != "smallcnn", "torchvision has no ImageNet weights for the "
                 "small CNN; choose ResNet, MobileNetV2 or VGG, or a weights file.")
        elif self.weights is not None:
            need(Path(self.weights).expanduser().is_file(),
                 f"weights file {self.weights} does not exist.")
        return self

    def uses(self, name: str) -> bool:
        """Whether setting ``name`` has an effect with the other settings as they are
        (ε only for label smoothing, momentum only for SGD, …)."""
        needs = RunConfig.__dataclass_fields__[name].metadata["uses"]
        return all(getattr(self, other) in values for other, values in needs.items())

    def effective(self, name: str):
        """The value setting ``name`` takes in training: a default where it is None (α,
        the image size)."""
        if name == "alpha":
            return loss_alpha(self.loss, self.alpha)
        if name == "image_size":
            return self.effective_image_size
        return getattr(self, name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """A stored configuration; one written before olsdesk held out a test split keeps
        its two-way split (it resumes and evaluates on the images it was split into), one
        written before OLS had a minimum of correct predictions a row keeps the paper's 1."""
        if not isinstance(data, dict):
            raise ConfigError("the run configuration is not a JSON object of settings.")
        if "val_fraction" in data and "test_fraction" not in data:
            data = {**data, "test_fraction": 0.0}
        if "loss" in data and "ols_min_correct" not in data:  # OLS as it trained then
            data = {**data, "ols_min_correct": 1}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown settings in the run configuration: {', '.join(unknown)}.")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"it is not valid JSON ({exc}).") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> RunConfig:
        return replace(self, **changes)
