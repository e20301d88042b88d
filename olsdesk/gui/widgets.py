"""Small widgets of the main window: the epoch scrubber, the training status bar, the
dataset preview, and the wheel guard for input boxes. Each subscribes to a model
(RunSession, TrainingController) or is handed what it shows, and only draws."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from olsdesk.core.data.sources import Dataset
from olsdesk.core.data.transforms import Preprocessing
from olsdesk.core.names import class_groups
from olsdesk.core.report import BatchProgress, RunStarted, eta_seconds, format_duration
from olsdesk.errors import ImageReadError, printable
from olsdesk.gui.panels.common import array_pixmap
from olsdesk.gui.session import RunSession


class EpochScrubber(QWidget):
    """One slider (with ▶ Play) that chooses the epoch every per-epoch view shows."""

    def __init__(self, session: RunSession, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(1, 1)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(session.select)
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Watch the epochs from the first one")
        self.play_button.setEnabled(False)
        self.play_button.clicked.connect(self.toggle_play)
        self.label = QLabel("no epochs yet")
        self.label.setMinimumWidth(130)
        self.timer = QTimer(self)
        self.timer.setInterval(700)
        self.timer.timeout.connect(self._step)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Epoch"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        row.addWidget(self.play_button)
        session.reports_reset.connect(self._count_changed)
        session.report_added.connect(self._count_changed)
        session.epoch_selected.connect(self._selected)

    def _count_changed(self, *_) -> None:
        count = len(self.session.reports)
        self.slider.blockSignals(True)
        self.slider.setRange(1, max(count, 1))
        self.slider.blockSignals(False)
        self.slider.setEnabled(count > 0)
        self.play_button.setEnabled(count > 1)
        if count == 0:
            self.label.setText("no epochs yet")
            self.stop_play()

    def _selected(self, report) -> None:
        if report is None:
            return
        self.slider.blockSignals(True)
        self.slider.setValue(self.session.position)
        self.slider.blockSignals(False)
        self.label.setText(f"epoch {report.epoch} of {report.epochs}")

    def toggle_play(self) -> None:
        if self.timer.isActive():
            self.stop_play()
            return
        self.session.select(1)
        self.play_button.setText("■ End replay")
        self.timer.start()

    def stop_play(self) -> None:
        self.timer.stop()
        self.play_button.setText("▶ Play")

    def _step(self) -> None:
        if self.session.position >= len(self.session.reports):
            self.stop_play()
            return
        self.session.select(self.session.position + 1)


class TrainingStatus(QStatusBar):
    """The message, epoch and run progress, ETA, images a second and the device."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = QLabel("Ready: press Train to train on the demo set.")
        # a long message (a run's path) is cut short, never widening the window
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.epoch_progress = QProgressBar()
        self.epoch_progress.setFormat("epoch %p%")
        self.run_progress = QProgressBar()
        self.run_progress.setFormat("run %p%")
        for bar in (self.epoch_progress, self.run_progress):
            bar.setMaximumWidth(140)
            bar.setRange(0, 1000)
        self.eta_label = QLabel("")
        self.speed_label = QLabel("")
        self.device_label = QLabel("")
        self.addWidget(self.message, 1)
        for widget in (self.epoch_progress, self.run_progress, self.eta_label,
                       self.speed_label, self.device_label):
            self.addPermanentWidget(widget)
        self.start_epoch = 0

    def say(self, text: str) -> None:
        self.message.setText(text)

    def run_started(self, started: RunStarted) -> None:
        self.start_epoch = started.start_epoch
        self.epoch_progress.show()
        self.device_label.setText(started.info.device)
        self.reset()

    def reset(self) -> None:
        self.epoch_progress.setValue(0)
        self.run_progress.setValue(0)
        self.eta_label.setText("")
        self.speed_label.setText("")

    def progressed(self, p: BatchProgress, prefix: str = "", paused: bool = False) -> None:
        done = p.fraction_of_run(self.start_epoch)
        self.epoch_progress.setValue(int(1000 * p.fraction_of_epoch))
        self.run_progress.setValue(int(1000 * done))
        eta = eta_seconds(p.elapsed_seconds, done)  # the trainer's clock: pauses excluded
        self.eta_label.setText(f"ETA {format_duration(eta)}")
        self.speed_label.setText(f"{p.images_per_second:,.0f} img/s")
        if paused:
            return
        if p.phase == "compile":
            self.speed_label.setText("")
            self.say(f"{prefix}Epoch {p.epoch}/{p.epochs}: compiling the model "
                     "(torch.compile: the first steps take longer)…")
            return
        phase = "training" if p.phase == "train" else "validating"
        loss = "" if p.loss != p.loss else f", loss {p.loss:.4f}"
        self.say(f"{prefix}Epoch {p.epoch}/{p.epochs}: {phase} batch {p.batch}/"
                 f"{p.batches}{loss}")

    def show_epochs(self, done: int, epochs: int) -> None:
        """A run on disk: epochs done of its epochs on the run bar; no batch, speed or
        ETA of this process's to show, so no epoch bar."""
        self.reset()
        self.epoch_progress.hide()
        self.run_progress.setValue(int(1000 * done / epochs) if epochs else 0)

    def ended(self, finished: bool) -> None:
        if finished:
            self.run_progress.setValue(1000)
        self.eta_label.setText("")


class DatasetPreview(QWidget):
    """A dataset's summary (images, classes, per-class counts) and one thumbnail a class."""

    MAX_ROWS = 40
    MAX_THUMBS = 12
    MAX_WARNINGS = 8

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.thumbs = QGridLayout()
        self.thumbs.setSpacing(2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addLayout(self.thumbs)

    def show_reading(self) -> None:
        self.summary.setText("<i>reading…</i>")
        self._clear_thumbs()

    def show_error(self, message: str) -> None:
        self.summary.setText(f"<span style='color:#b00020'>{message}</span>")
        self._clear_thumbs()

    def show_dataset(self, data: Dataset, thumbnails: list[tuple[str, np.ndarray]]) -> None:
        counts = data.per_class_counts()
        totals = [sum(c) for c in counts.values()]
        table, more = self._class_rows(counts)
        self.summary.setText(
            f"<b>{sum(totals):,}</b> images, <b>{data.num_classes}</b> "
            f"classes ({_range_text(min(totals), max(totals))} a class), "
            f"{'grayscale' if data.channels == 1 else 'colour'}<br>"
            f"<table cellspacing='0' cellpadding='1'>{table}</table>{more}"
            + _warning_lines(data.all_warnings(), self.MAX_WARNINGS)
            + (f"<br><span style='color:#2e7d32'>✓ audited: {html.escape(data.audit.lines()[0])}"
               "</span>" if data.audit is not None and data.audit.clean else ""))
        self._clear_thumbs()
        for shown, (name, image) in enumerate(thumbnails):
            thumb = QLabel()
            thumb.setPixmap(array_pixmap(image, 48))  # four fit the column at 1024 px
            thumb.setToolTip(name)
            self.thumbs.addWidget(thumb, shown // 4, shown % 4)

    def _class_rows(self, counts: dict[str, tuple[int, ...]]) -> tuple[str, str]:
        """The table's rows: a class a row; past MAX_ROWS classes in folders (RadImageNet's
        165), a modality/anatomy group a row with its classes' sums and range, and the
        classes with the fewest training images below (those a run learns least of)."""
        def row(name: str, values, note: str = "") -> str:
            return (f"<tr><td>{html.escape(printable(name))}{note}</td>"
                    + "".join(f"<td align='right'>{x:,}</td>" for x in values) + "</tr>")

        head = "<tr><th align='left'>{}</th><th>train</th><th>val</th><th>test</th></tr>"
        names = list(counts)
        if len(names) <= self.MAX_ROWS:
            return head.format("class") + "".join(row(n, counts[n]) for n in names), ""
        for level in (2, 1):
            groups, of = class_groups(names, level)
            if 1 < len(groups) <= self.MAX_ROWS:
                break
        else:
            return (head.format("class") + "".join(row(n, counts[n])
                                                   for n in names[: self.MAX_ROWS]),
                    f"<br>… and {len(names) - self.MAX_ROWS} more classes")
        members: dict[int, list[str]] = {}
        for name, group in zip(names, of, strict=True):
            members.setdefault(group, []).append(name)
        rows = []
        for g, group in enumerate(groups):
            inside = members[g]
            train = [counts[n][0] for n in inside]
            sums = [sum(counts[n][i] for n in inside) for i in range(3)]
            rows.append(row(group, sums, f" <span style='color:#666'>({len(inside)} classes, "
                                         f"{_range_text(min(train), max(train))} train a "
                                         "class)</span>"))
        fewest = sorted(names, key=lambda n: (counts[n][0], n))[:5]
        least = ", ".join(f"{html.escape(printable(n))} {counts[n][0]:,}" for n in fewest)
        return (head.format("group") + "".join(rows),
                f"<br>Fewest training images: {least}")

    def _clear_thumbs(self) -> None:
        while self.thumbs.count():
            widget = self.thumbs.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()


def _warning_lines(warnings: tuple[str, ...], limit: int) -> str:
    """The first ``limit`` warnings as rich-text lines, and how many more there are."""
    lines = "".join(f"<br><span style='color:#b36b00'>⚠ {html.escape(w)}</span>"
                    for w in warnings[:limit])
    more = len(warnings) - limit
    return lines + (f"<br><span style='color:#b36b00'>… and {more:,} more warnings</span>"
                    if more > 0 else "")


def read_thumbnails(data: Dataset, preprocessing: Preprocessing,
                    limit: int = DatasetPreview.MAX_THUMBS) -> list[tuple[str, np.ndarray]]:
    """(class name, image) for the first training image of up to ``limit`` classes, read
    the way training reads it (off the GUI thread: files can be large)."""
    out = []
    for c in range(data.num_classes):
        if len(out) >= limit:
            break
        where = np.flatnonzero(data.train.labels == c)
        if not len(where):
            continue
        try:
            out.append((data.class_names[c], data.train.load(int(where[0]), preprocessing)))
        except ImageReadError:
            continue  # a broken thumbnail is just not shown
    return out


class WheelGuard(QObject):
    """Combo and spin boxes take the mouse wheel only when they have the focus.

    Installed once on the application: scrolling the settings column no longer changes
    whatever setting passes under the pointer (a model or a learning rate changed
    unnoticed); the column scrolls instead. Click a box, or tab to it, to use its wheel.
    """

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if isinstance(watched, QComboBox | QAbstractSpinBox):
            if kind == QEvent.Type.Polish:  # a wheel must not give them the focus either
                watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            elif kind == QEvent.Type.Wheel and not watched.hasFocus():
                event.ignore()  # not theirs: Qt passes it on to the parent that scrolls
                return True
        return False


def _range_text(lo: int, hi: int) -> str:
    """'200' when every class has 200 images, '150–210' otherwise."""
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


class DialogFolders:
    """Where each kind of file dialog opens: the folder last chosen for that kind
    (remembered across sessions), else the runs folder for what lives in runs
    (checkpoints, exports, evaluations) and the home folder for data and weights."""

    IN_RUNS = frozenset({"checkpoint", "export", "evaluation", "predictions"})

    def __init__(self, settings=None, runs_dir=None) -> None:
        self.settings = settings
        self.runs_dir = runs_dir  # a callable: the runs folder may change

    def start(self, kind: str) -> str:
        saved = self.settings.value(f"folders/{kind}", "") if self.settings is not None else ""
        if saved and Path(saved).is_dir():
            return str(saved)
        if kind in self.IN_RUNS and self.runs_dir is not None and Path(self.runs_dir()).is_dir():
            return str(self.runs_dir())
        return str(Path.home())

    def remember(self, kind: str, chosen: str | Path) -> None:
        """Keep the folder of what was chosen (a file's folder, or the folder itself)."""
        if self.settings is None or not chosen:
            return
        path = Path(chosen)
        self.settings.setValue(f"folders/{kind}", str(path if path.is_dir() else path.parent))
