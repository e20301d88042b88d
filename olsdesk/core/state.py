"""AppState: what the app shows, in one Qt-free model with evented fields.

The window shows one thing at a time and everything it shows must belong to it: the
settings being edited, the run on show, the checkpoint that Predict, Evaluate and
Grad-CAM use, the evaluation *of that checkpoint*, and what the user has selected. Each
is a field here; changing one emits its event, and the views (Qt widgets, or a test, or
a script) subscribe and draw. The rules that keep them true live here, not in widgets:

- a new run clears the checkpoint, and a new checkpoint drops the evaluation of the old
  one, so no view can show (and no export can write) another model's test results;
- an evaluation is accepted only for the checkpoint in use when it arrives.

napari's ``components`` (models with evented fields, views in ``_qt``) are the pattern.
Changes happen on one thread (the GUI thread in the app); nothing here is locked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from olsdesk.config import RunConfig


class Event:
    """One field's change notification: ``connect(callback)``, ``emit(value)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Any], None]] = []

    def connect(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.remove(callback)

    def emit(self, value: Any) -> None:
        for callback in list(self._callbacks):
            callback(value)


@dataclass(frozen=True)
class CheckpointRef:
    """The weights in use: a checkpoint file, and the epoch it holds when known.

    best.pt keeps its name while training writes a better epoch into it, so the epoch is
    part of what a checkpoint *is*: the same path with another epoch is another model.
    """

    path: str
    epoch: int | None = None
    note: str = ""  # how the app names it ("run-x, best checkpoint, epoch 3, …")

    @property
    def name(self) -> str:
        return self.note or Path(self.path).name

    def same_weights(self, other: CheckpointRef | None) -> bool:
        return other is not None and (self.path, self.epoch) == (other.path, other.epoch)

    def describes(self, evaluation) -> bool:
        """True when ``evaluation`` (anything with ``checkpoint`` and ``epoch``) was made
        from these weights."""
        return str(evaluation.checkpoint) == self.path and (
            self.epoch is None or evaluation.epoch == self.epoch)


@dataclass(frozen=True)
class Selection:
    """What the user picked, as indices (never display strings): the epoch shown
    (1-based position, 0 for none) and, within the test evaluation, a confusion cell,
    a class's mistakes or a confidence bin."""

    epoch: int = 0
    cell: tuple[int, int] | None = None  # (true class, predicted class)
    class_index: int | None = None
    confidence_bin: int | None = None


@dataclass(frozen=True)
class ShownRun:
    """The run on show: its folder and what run.json says (None before it exists)."""

    path: Path
    info: Any = None  # records.RunInfo


@dataclass
class AppState:
    """The one model the window shows. Set fields through the methods, which keep the
    rules above and emit ``events.<field>`` with the new value."""

    config: RunConfig = field(default_factory=RunConfig)
    run: ShownRun | None = None
    checkpoint: CheckpointRef | None = None
    evaluation: Any = None  # core.evaluation.Evaluation of ``checkpoint``, or None
    selection: Selection = field(default_factory=Selection)
    events: Any = field(default=None, repr=False, compare=False)

    FIELDS = ("config", "run", "checkpoint", "evaluation", "selection")

    def __post_init__(self) -> None:
        self.events = type("Events", (), {})()
        for name in self.FIELDS:
            setattr(self.events, name, Event())

    def _set(self, name: str, value) -> None:
        if getattr(self, name) is value:
            return
        setattr(self, name, value)
        getattr(self.events, name).emit(value)

    # --- the settings --------------------------------------------------------------
    def set_config(self, config: RunConfig) -> None:
        if config != self.config:
            self._set("config", config)

    def edit_config(self, **changes) -> RunConfig:
        """Change some settings of the config being edited; the rest stay as they are."""
        self.set_config(replace(self.config, **changes))
        return self.config

    # --- the run, its checkpoint and the checkpoint's evaluation -------------------------
    def set_run(self, run: ShownRun | None) -> None:
        """Show another run (or none): its checkpoint and evaluation go with the old one."""
        same = run is not None and self.run is not None and run.path == self.run.path
        self._set("run", run)
        if not same:
            self.set_checkpoint(None)
            self.select(Selection())

    def set_checkpoint(self, checkpoint: CheckpointRef | None) -> None:
        """Use other weights; an evaluation of different weights is dropped."""
        if checkpoint == self.checkpoint:
            return
        keep = checkpoint is not None and checkpoint.same_weights(self.checkpoint)
        self._set("checkpoint", checkpoint)
        if not keep:
            self._set("evaluation", None)
            self.select(replace(self.selection, cell=None, class_index=None,
                                confidence_bin=None))

    def set_evaluation(self, evaluation, of: CheckpointRef | None = None) -> bool:
        """Show ``evaluation``, made from the checkpoint ``of`` (the one in use when it was
        started). Refused (False, nothing changes) unless that is still the checkpoint in
        use and the evaluation's weights are its weights."""
        if evaluation is None:
            self._set("evaluation", None)
            return True
        current = self.checkpoint
        of = of or current
        if current is None or of != current or not current.describes(evaluation):
            return False
        self._set("evaluation", evaluation)
        self.select_images()  # the pick was of the rows of another evaluation
        return True

    @property
    def evaluation_is_current(self) -> bool:
        """True when there is an evaluation and it belongs to the checkpoint in use."""
        return (self.evaluation is not None and self.checkpoint is not None
                and self.checkpoint.describes(self.evaluation))

    # --- the selection -----------------------------------------------------------------
    def select(self, selection: Selection) -> None:
        if selection != self.selection:
            self._set("selection", selection)

    def select_epoch(self, position: int) -> None:
        self.select(replace(self.selection, epoch=position))

    def select_images(self, cell: tuple[int, int] | None = None,
                      class_index: int | None = None,
                      confidence_bin: int | None = None) -> None:
        """Pick the evaluation's test images to look at: a confusion cell, a class's
        mistakes or a confidence bin (one of them; none clears the pick)."""
        self.select(replace(self.selection, cell=cell, class_index=class_index,
                            confidence_bin=confidence_bin))
