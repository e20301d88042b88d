"""``Predictor.from_checkpoint(path).predict(paths)``: class probabilities for image files.

Class names, preprocessing and the temperature come from the checkpoint, so a
prediction takes exactly the evaluation path the model was trained with. Every file
gets a ``Prediction``: probabilities, or ``error``, one sentence saying why not.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from olsdesk.core.calibration import Recalibration, apply_temperature
from olsdesk.core.conformal import DEFAULT_METHOD, ConformalSets
from olsdesk.core.data.images import ImageReadError, source_frame
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.device import choose_device, forward_precision, memory_format
from olsdesk.core.models import build_model
from olsdesk.core.runs import RunError, load_checkpoint
from olsdesk.errors import PredictorError, printable

log = logging.getLogger(__name__)
SET_SHOWN = 10  # a prediction set's classes a line names; past them, how many more


@dataclass(frozen=True)
class Prediction:
    """One file's prediction, or the reason there is none."""

    path: str
    top_classes: tuple[str, ...] = ()
    top_probabilities: tuple[float, ...] = ()
    probabilities: np.ndarray | None = field(default=None, repr=False)
    calibrated_probabilities: np.ndarray | None = field(default=None, repr=False)
    error: str | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False, compare=False)  # uint8
    frame: tuple[int, int] | None = None  # (frame, frames) of a multi-frame file used
    checkpoint: str = ""  # the checkpoint that made the prediction
    epoch: int | None = None  # that checkpoint's epoch
    # the conformal set (most probable first) holding the true class with probability
    # set_coverage; None when the checkpoint keeps no calibration (older than 0.4)
    prediction_set: tuple[str, ...] | None = None
    set_coverage: float | None = None
    # the unfamiliar-input score (high: like the training data) and whether it lies below
    # the threshold that keeps 95 % of validation images; None without a detector
    familiarity: float | None = None
    unfamiliar: bool | None = None
    # what made calibrated_probabilities (fitted on validation): a RECALIBRATORS name
    recalibration: str = "temperature"

    @property
    def unfamiliar_sentence(self) -> str:
        """One sentence when the image is unlike the training data ("" otherwise)."""
        if not self.unfamiliar:
            return ""
        return (f"{Path(self.path).name} is unlike the training data (less familiar to the "
                "model than 95 % of validation images): do not trust this prediction.")

    @property
    def note(self) -> str:
        """What part of the file was used, e.g. "frame 61 of 120" ("" for all of it)."""
        return f"frame {self.frame[0]} of {self.frame[1]}" if self.frame else ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def confidence(self) -> float:
        """The top class's probability (NaN when the file failed)."""
        return float(self.probabilities.max()) if self.probabilities is not None else math.nan

    @property
    def calibrated_confidence(self) -> float:
        p = self.calibrated_probabilities
        return float(p[np.argmax(self.probabilities)]) if p is not None else math.nan

    @property
    def entropy(self) -> float:
        """Shannon entropy of the predicted distribution, in nats (0 = certain)."""
        if self.probabilities is None:
            return math.nan
        p = np.clip(self.probabilities, 1e-12, 1.0)
        return float(-(p * np.log(p)).sum())

    def to_dict(self) -> dict:
        out = {"path": printable(self.path), "error": self.error,
               "checkpoint": printable(self.checkpoint), "epoch": self.epoch,
               "frame": self.frame[0] if self.frame else None,
               "frames": self.frame[1] if self.frame else None}
        if self.ok:
            order = np.argsort(-self.probabilities)[: len(self.top_classes)]
            out.update(top_classes=list(self.top_classes),
                       top_probabilities=[round(float(p), 6) for p in self.top_probabilities],
                       calibrated_top_probabilities=[
                           round(float(self.calibrated_probabilities[i]), 6) for i in order],
                       recalibration=self.recalibration, entropy=round(self.entropy, 6),
                       prediction_set=None if self.prediction_set is None
                       else list(self.prediction_set),
                       set_coverage=self.set_coverage, unfamiliar=self.unfamiliar,
                       familiarity=None if self.familiarity is None
                       else round(self.familiarity, 6))
        return out

    @property
    def set_text(self) -> str:
        """The set as a reader sees it, "{A, B} at 90 %" ("" without one)."""
        return self.set_summary(None)

    def set_summary(self, most: int | None = SET_SHOWN) -> str:
        """The set as a line shows it: past ``most`` classes, its first ``most`` (the most
        probable first) and how many it holds: "{A, B, …, J, … 119 more: 129 classes} at
        90%" (a doubtful image's set at 165 classes can name most of them)."""
        if self.prediction_set is None:
            return ""
        names = list(self.prediction_set)
        if most is not None and len(names) > most:
            names = names[:most] + [f"… {len(self.prediction_set) - most} more: "
                                    f"{len(self.prediction_set)} classes"]
        return f"{{{', '.join(names)}}} at {self.set_coverage:.0%}"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and every non-hidden file inside given folders (sorted by their
    path's parts, as sorted Paths are; links to folders not followed); each file once,
    however often it is named (a folder and a file inside it, dropped together). Folders
    are walked on strings: a Path per file and two more per test made a 20,000-file
    folder cost 0.55 s of the worker's GIL, twice, while the window was drawing."""
    out: list[Path] = []
    seen: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            base = os.path.abspath(path)
            found = sorted(_files_below(base))
            files = [(f"{base}{os.sep}{os.sep.join(parts)}", parts) for parts in found]
            files = [(key, path.joinpath(*parts)) for key, parts in files]
        else:
            files = [(os.path.abspath(path), path)]
        for key, file in files:
            if key not in seen:
                seen.add(key)
                out.append(file)
    return out


def _files_below(base: str) -> Iterator[tuple[str, ...]]:
    """The relative parts of every file under the folder ``base`` whose parts are none of
    them hidden; links to files are files, links to folders are not walked."""
    stack: list[tuple[str, tuple[str, ...]]] = [(base, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:  # unreadable: skipped, as Path.rglob does
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, (*parts, entry.name)))
                elif entry.is_file():
                    yield (*parts, entry.name)
            except OSError:
                continue


class Predictor:
    """A trained model with its class names, preprocessing and temperature."""

    def __init__(self, model: torch.nn.Module, class_names: tuple[str, ...],
                 preprocessing: Preprocessing, temperature: float = 1.0,
                 device: torch.device | None = None, source: str = "",
                 epoch: int | None = None, config=None, calibration=None,
                 familiarity=None, recalibration: Recalibration | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.memory_format = memory_format(self.device)  # as training's (core.device)
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.class_names = tuple(class_names)
        self.preprocessing = preprocessing
        self.temperature = float(temperature)
        self.source = source
        self.epoch = epoch
        self.config = config  # the run's RunConfig (where its data and split came from)
        self.calibration = calibration  # conformal.Calibration from validation, or None
        self.sets: ConformalSets | None = None  # what each prediction's set comes from
        self.familiarity = familiarity  # ood.Familiarity from validation, or None
        # every recalibrator fitted on validation (an older checkpoint: the temperature)
        self.recalibration = recalibration or Recalibration(self.temperature)
        self.recalibrator = "temperature"  # the one calibrated probabilities come from
        self.use_sets()
        # one pass through the model at a time: Grad-CAM hooks a layer, and a prediction
        # from another thread must not run through it meanwhile
        self.lock = threading.RLock()

    def inputs(self, batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """A batch (or its images' tensors) on the device, in the model's layout: as
        validation's batches, so the model computes what validation stored."""
        if not isinstance(batch, torch.Tensor):
            batch = torch.stack(list(batch))
        return self.preprocessing.finish(batch, self.device, self.memory_format)

    def precision(self) -> torch.autocast:
        """The autocast region the model runs in: the run's own rule on this device
        (``core.device.amp_dtype``), so on the kind of device that trained it, a
        prediction computes what validation stored."""
        return forward_precision(self.device, getattr(self.config, "amp", False))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Predictor:
        """Load an olsdesk checkpoint; PredictorError says in one sentence what is wrong."""
        path = Path(path)
        try:
            checkpoint = load_checkpoint(path)
        except RunError as exc:
            raise PredictorError(str(exc)) from None
        try:
            model = build_model(checkpoint.model_name, checkpoint.num_classes,
                                checkpoint.in_channels)
            model.load_state_dict(checkpoint.model)
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{path.name} is an incomplete olsdesk checkpoint "
                                 f"({type(exc).__name__}: {exc}).") from None
        except RuntimeError:
            raise PredictorError(
                f"{path.name}'s weights do not fit a {checkpoint.model_name} with "
                f"{checkpoint.num_classes} classes; the file is damaged or was edited.") from None
        density = checkpoint.familiarity.density if checkpoint.familiarity else None
        if density is not None and density.means.shape != (checkpoint.num_classes,
                                                           model.feature_dim):
            raise PredictorError(f"{path.name} is damaged or was edited: its unfamiliar-input "
                                 "detector does not fit the model's classes and features.")
        recalibration = checkpoint.recalibrators
        try:
            recalibration.check(checkpoint.num_classes)
        except ValueError as exc:
            raise PredictorError(f"{path.name} is damaged or was edited: {exc}.") from None
        return cls(model, checkpoint.class_names, checkpoint.preprocessing,
                   checkpoint.temperature, choose_device(device), str(path), checkpoint.epoch,
                   checkpoint.config, checkpoint.calibration, checkpoint.familiarity,
                   recalibration)

    def use_sets(self, method: str = DEFAULT_METHOD, coverage: float = 0.9,
                 class_conditional: bool = False) -> None:
        """Fit the prediction sets from the checkpoint's calibration (none without one)."""
        if self.calibration is not None:
            self.sets = self.calibration.fit(method, coverage, class_conditional,
                                             num_classes=len(self.class_names))

    def use_recalibration(self, method: str) -> None:
        """Calibrated probabilities from ``method`` (a RECALIBRATORS name) from now on;
        PredictorError when the checkpoint holds no such recalibrator (an older one
        holds only the temperature). The sets stay on the temperature-scaled
        probabilities they were calibrated on."""
        if method not in self.recalibration.methods:
            raise PredictorError(
                f"{Path(self.source).name or 'this checkpoint'} holds no {method} "
                f"recalibration (only {', '.join(self.recalibration.methods)}): it was saved "
                "by an older olsdesk; retrain, or choose one it holds.")
        self.recalibrator = method

    def predict(self, paths: Iterable[str | Path], top_k: int = 5, batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None,
                cancel: threading.Event | None = None,
                thumbnails: bool = False) -> list[Prediction]:
        """A Prediction for every file (folders are expanded); stops early on ``cancel``."""
        return list(self.iter_predict(paths, top_k, batch_size, progress, cancel, thumbnails))

    def iter_predict(self, paths: Iterable[str | Path], top_k: int = 5, batch_size: int = 32,
                     progress: Callable[[int, int], None] | None = None,
                     cancel: threading.Event | None = None,
                     thumbnails: bool = False, expanded: bool = False) -> Iterator[Prediction]:
        """Predictions in file order, each as soon as its batch is done. One file's failure,
        whatever it is, is that file's ``error``; the others go on. With ``thumbnails``
        each prediction keeps a small preview of its image (never the decoded image).
        ``expanded``: ``paths`` are ``expand_paths``'s list already (not looked at again)."""
        files = list(paths) if expanded else expand_paths(paths)
        pending: list[Prediction | tuple[Path, np.ndarray | None, torch.Tensor,
                                 tuple[int, int] | None]] = []

        def flush() -> Iterator[Prediction]:
            tensors = [item[2] for item in pending if not isinstance(item, Prediction)]
            logits = familiar = iter(())
            if tensors:
                with torch.no_grad(), self.lock, self.precision():
                    out, features = self.model.forward_with_features(self.inputs(tensors))
                    out = out.float().cpu().numpy()
                if self.familiarity is not None:
                    familiar = iter(self.familiarity.score(out, features.float().cpu().numpy()))
                logits = iter(out)
            for item in pending:
                if isinstance(item, Prediction):
                    yield item
                else:
                    file, thumb, _, frame = item
                    yield self._prediction(file, next(logits), top_k, thumb, frame,
                                           next(familiar, None))
            pending.clear()

        for i, file in enumerate(files):
            if cancel is not None and cancel.is_set():
                break
            try:  # the per-file firewall
                image, tensor = self.preprocessing.prepare(
                    lambda file=file: self.preprocessing.read(file), str(file))
                frame = source_frame(file)
            except ImageReadError as exc:
                if getattr(exc, "detail", ""):
                    log.warning("predicting %s failed:\n%s", printable(str(file)), exc.detail)
                pending.append(Prediction(str(file), error=str(exc), checkpoint=self.source,
                                          epoch=self.epoch))
            else:
                pending.append((file, thumbnail(image) if thumbnails else None, tensor, frame))
            if len(pending) >= batch_size:
                yield from flush()
            if progress is not None:
                progress(i + 1, len(files))
        yield from flush()

    def _prediction(self, file: Path, logits: np.ndarray, top_k: int,
                    thumb: np.ndarray | None, frame: tuple[int, int] | None,
                    familiarity: float | None = None) -> Prediction:
        probs = apply_temperature(logits[None], 1.0)[0]
        scaled = apply_temperature(logits[None], self.temperature)[0]
        calibrated = (scaled if self.recalibrator == "temperature" else
                      self.recalibration.apply_to_logits(self.recalibrator, logits[None])[0])
        order = np.argsort(-probs)[: max(1, min(top_k, len(probs)))]
        members = coverage = None
        if self.sets is not None:  # on the scaled probabilities, as it was calibrated
            held = self.sets.sets(scaled[None])[0]
            members = tuple(self.class_names[i] for i in np.argsort(-scaled, kind="stable")
                            if held[i])
            coverage = self.sets.coverage
        return Prediction(str(file), tuple(self.class_names[i] for i in order),
                          tuple(float(probs[i]) for i in order), probs, calibrated, None, thumb,
                          frame, self.source, self.epoch, members, coverage,
                          None if familiarity is None else float(familiarity),
                          None if familiarity is None
                          else bool(self.familiarity.unfamiliar(familiarity)),
                          self.recalibrator)


def thumbnail(image: np.ndarray, size: int = 224) -> np.ndarray:
    """A copy at most ``size`` pixels a side, as uint8 (what a list row keeps, not the
    decoded image: a 512 px scan keeps 171 px, 29 KB instead of 1 MB of floats)."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / size)))
    small = image[::step, ::step]
    return np.ascontiguousarray((np.clip(small, 0, 1) * 255).astype(np.uint8))


def write_predictions_csv(predictions: Iterable[Prediction], path: str | Path,
                          low_confidence_below: float = 0.5) -> Path:
    """One row a file: the frame used (multi-frame files), top-1, raw and calibrated
    confidence, entropy, the low-confidence mark, the top-k with probabilities, the
    prediction set (classes joined by ``|``) and its coverage, the unfamiliar-input mark and
    score, or the error sentence; and
    the checkpoint (and its epoch) that made the prediction."""
    from olsdesk.core.outputs import write_output_file

    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(["path", "frame", "frames", "top1", "confidence",
                     "calibrated_confidence", "entropy", "low_confidence", "top5",
                     "prediction_set", "set_coverage", "unfamiliar", "familiarity",
                     "error", "checkpoint", "epoch"])
    for p in predictions:
        frame = [p.frame[0], p.frame[1]] if p.frame else ["", ""]
        made_by = [p.checkpoint, "" if p.epoch is None else p.epoch]
        if p.ok:
            writer.writerow([p.path, *frame, p.top_classes[0], f"{p.confidence:.6f}",
                             f"{p.calibrated_confidence:.6f}", f"{p.entropy:.6f}",
                             p.confidence < low_confidence_below,
                             "|".join(f"{c}:{v:.4f}" for c, v in
                                      zip(p.top_classes, p.top_probabilities, strict=True)),
                             "" if p.prediction_set is None else "|".join(p.prediction_set),
                             "" if p.set_coverage is None else p.set_coverage,
                             "" if p.unfamiliar is None else p.unfamiliar,
                             "" if p.familiarity is None else f"{p.familiarity:.6g}",
                             "", *made_by])
        else:
            writer.writerow([p.path, *frame, *[""] * 10, p.error, *made_by])
    return write_output_file(path, fh.getvalue())
