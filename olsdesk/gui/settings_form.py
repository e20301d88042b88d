"""The settings form, generated from RunConfig's fields as the CLI's options are.

Each field's label, range, step, choices and the settings it depends on (ε only for label
smoothing, momentum only for SGD) are stated once, in ``olsdesk/config.py``; this module
turns them into widgets. The form edits the ``RunConfig`` held by ``AppState``: a widget
writes its own field when it changes and nothing else, so a run opened and trained again
keeps every setting it had, including those the form shows under "More settings".
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import fields

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from olsdesk.config import RunConfig
from olsdesk.core.state import AppState

INT_MAX = 2**31 - 1  # QSpinBox's ceiling; larger ranges (seeds) use a 0-decimal double box
PATH_KINDS = {"weights": ("file", "PyTorch weights (*.pt *.pth *.bin);;All files (*)"),
              "test_data": ("dir", "")}


def field_meta(name: str) -> dict:
    return RunConfig.__dataclass_fields__[name].metadata


def _base_type(name: str):
    hint = typing.get_type_hints(RunConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), type(None) in typing.get_args(hint)


def spin_range(name: str) -> tuple[float, float]:
    """The form's range for a numeric field: its bounds, an open end moved in by one step
    of the shown precision (so every value the box offers passes ``validated``)."""
    meta = field_meta(name)
    lo, hi = meta["bounds"]
    tick = 10.0 ** -meta["decimals"] if _base_type(name)[0] is float else 1
    ends = meta["open_bounds"]
    return (lo + tick if ends in ("lo", "both") else lo,
            hi - tick if ends in ("hi", "both") else hi)


class NumberField(QWidget):
    """A number, or (for a field that may be None) "auto": the field's default applies."""

    changed = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        meta = field_meta(name)
        kind, self.optional = _base_type(name)
        lo, hi = spin_range(name)
        if kind is int and hi <= INT_MAX:
            self.box = QSpinBox()
        else:
            self.box = QDoubleSpinBox()
            self.box.setDecimals(meta["decimals"] if kind is float else 0)
        self.integer = kind is int
        self.box.setRange(lo, hi)
        if meta["step"]:
            self.box.setSingleStep(meta["step"])
        self.box.valueChanged.connect(self.changed)
        self.setFocusProxy(self.box)  # focusing the field focuses its box
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.box, 1)
        # None means "the default applies": an "auto" box, except for α, whose box shows
        # the chosen loss's default until edited
        self.has_auto = self.optional and name != "alpha"
        self.auto = QCheckBox("auto")
        self.auto.setVisible(self.has_auto)
        self.auto.toggled.connect(self._auto_toggled)
        row.addWidget(self.auto)

    def _auto_toggled(self, on: bool) -> None:
        self.box.setEnabled(not on)
        self.changed.emit()

    def value(self):
        if self.has_auto and self.auto.isChecked():
            return None
        value = self.box.value()
        return int(round(value)) if self.integer else value

    def setValue(self, value) -> None:  # noqa: N802 - the Qt spin boxes' name
        if value is None:
            if self.has_auto:
                self.auto.setChecked(True)
            return
        self.auto.setChecked(False)
        self.box.setValue(value)

    def show_effective(self, value) -> None:
        """Show what an 'auto' value means without choosing it (α of the loss chosen, the
        image size of the data)."""
        if value is not None:
            self.box.blockSignals(True)
            self.box.setValue(value)
            self.box.blockSignals(False)

    def minimum(self):
        return self.box.minimum()

    def maximum(self):
        return self.box.maximum()


class PathField(QWidget):
    """A file or folder: chosen with a dialog, cleared with ×; empty means none."""

    changed = Signal()

    chosen = Signal(str)  # a path picked in the dialog

    def __init__(self, name: str, start: Callable[[], str], parent: QWidget | None = None):
        super().__init__(parent)
        self.kind, self.filter = PATH_KINDS[name]
        self.start = start
        self.line = QLineEdit()
        self.line.setReadOnly(True)
        self.line.setPlaceholderText("none: train from scratch" if name == "weights"
                                     else "none")
        self.line.textChanged.connect(self.changed)
        self.pick = QPushButton("…")
        self.pick.setFixedWidth(28)
        self.pick.clicked.connect(self.choose)
        self.clear_button = QPushButton("×")
        self.clear_button.setFixedWidth(28)
        self.clear_button.clicked.connect(self.clear)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.line, 1)
        if name == "weights":  # torchvision's ImageNet weights, by name
            self.imagenet = QPushButton("ImageNet")
            self.imagenet.setToolTip("torchvision's ImageNet weights for the model: from "
                                     "its cache, downloaded when training starts if not")
            self.imagenet.clicked.connect(lambda: self.setText("imagenet"))
            row.addWidget(self.imagenet)
        row.addWidget(self.pick)
        row.addWidget(self.clear_button)

    def choose(self) -> None:
        if self.kind == "file":
            path, _ = QFileDialog.getOpenFileName(self, self.toolTip(), self.start(),
                                                  self.filter)
        else:
            path = QFileDialog.getExistingDirectory(self, self.toolTip(), self.start())
        if path:
            self.chosen.emit(path)
            self.setText(path)

    def text(self) -> str:
        return self.line.text()

    def setText(self, text: str | None) -> None:  # noqa: N802 - QLineEdit's name
        self.line.setText(text or "")

    def clear(self) -> None:
        self.line.clear()

    def value(self):
        return self.line.text() or None

    def setValue(self, value) -> None:  # noqa: N802
        self.setText(value)


def narrow(combo: QComboBox) -> None:
    """A combo box as narrow as the settings column (1024-pixel screens): its width no
    longer follows its longest choice, whose whole text shows when it opens."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0) + 24)


class ChoiceField(QComboBox):
    changed = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        meta = field_meta(name)
        for choice in meta["choices"]:
            self.addItem(meta["choice_labels"].get(choice, choice), choice)
        narrow(self)
        self.currentIndexChanged.connect(self.changed)

    def value(self):
        return self.currentData()

    def setValue(self, value) -> None:  # noqa: N802
        index = self.findData(value)
        if index >= 0:
            self.setCurrentIndex(index)


class TextField(QLineEdit):
    """Free text (a regular expression); empty means none."""

    changed = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("none")
        self.setClearButtonEnabled(True)
        self.editingFinished.connect(self.changed)

    def value(self):
        return self.text() or None

    def setValue(self, value) -> None:  # noqa: N802
        self.setText(value or "")


class FlagField(QCheckBox):
    changed = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggled.connect(self.changed)

    def value(self) -> bool:
        return self.isChecked()

    def setValue(self, value) -> None:  # noqa: N802
        self.setChecked(bool(value))


def make_field(name: str, start: Callable[[], str]) -> QWidget:
    """The widget for RunConfig field ``name``, from its type and metadata."""
    meta = field_meta(name)
    kind, _optional = _base_type(name)
    if name in PATH_KINDS:
        widget = PathField(name, start)
    elif meta["choices"]:
        widget = ChoiceField(name)
    elif kind is bool:
        widget = FlagField(name)
    elif kind is str:
        widget = TextField(name)
    else:
        widget = NumberField(name)
    widget.setToolTip(meta["help"])
    return widget


class SettingsForm:
    """The widgets of some RunConfig fields, laid out in a QFormLayout, bound to
    ``state.config``: a widget's change writes its field; a new config redraws them."""

    def __init__(self, state: AppState, names: list[str], start: Callable[[], str],
                 on_edit: Callable[[str], None] | None = None) -> None:
        self.state = state
        self.names = names
        self.on_edit = on_edit  # told which field the user changed (after it is written)
        self.widgets: dict[str, QWidget] = {}
        self.layout = QFormLayout()
        self._showing = False
        for name in names:
            widget = self.widgets[name] = make_field(name, start)
            widget.changed.connect(lambda name=name: self._edited(name))
            self.layout.addRow(field_meta(name)["label"] or name, widget)
        state.events.config.connect(self.show)
        self.show(state.config)

    def _edited(self, name: str) -> None:
        if self._showing:
            return
        value = self.widgets[name].value()
        if value != getattr(self.state.config, name):
            self.state.edit_config(**{name: value})
        if self.on_edit is not None:
            self.on_edit(name)

    def show(self, config: RunConfig) -> None:
        """Every widget shows ``config``'s value (which are live is ``update_enabled``'s,
        called by the panel that owns the form: it knows whether training runs)."""
        self._showing = True
        try:
            for name, widget in self.widgets.items():
                value = getattr(config, name)
                widget.setValue(value)
                if value is None and isinstance(widget, NumberField):
                    # 'auto' shows the value it means: α of the loss, 64 px on the demo set
                    widget.show_effective(config.effective(name))
        finally:
            self._showing = False

    def update_enabled(self, editable: bool) -> None:
        config = self.state.config
        for name, widget in self.widgets.items():
            used = config.uses(name)
            widget.setEnabled(editable and used)
            needs = field_meta(name)["uses"]
            widget.setStatusTip("" if used else "used only with " + ", ".join(
                f"{other} {' or '.join(map(str, values))}" for other, values in needs.items()))



def form_fields(group: str) -> list[str]:
    """RunConfig's fields of one form group ("main", "more"), in their declared order."""
    return [f.name for f in fields(RunConfig) if f.metadata.get("group") == group]
