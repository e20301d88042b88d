"""The error browser: the test images behind a confusion cell, a class or a reliability
bin, as thumbnails, the most confident first, each with its Grad-CAM overlay.

The maps are computed in the worker (``core.saliency.iter_explain``), a batch at a time,
thumbnails appearing as they are done; a new selection stops the old one. Selecting a
thumbnail shows it large with what the model said.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from olsdesk.core.evaluation import Evaluation, reliability_tables
from olsdesk.core.saliency import Explained, iter_explain
from olsdesk.core.state import AppState, Selection
from olsdesk.gui.panels.common import FittedPicture, array_pixmap
from olsdesk.gui.workers import Worker, in_chunks, start_worker

MAX_IMAGES = 120  # thumbnails a selection shows (its most confident first)
THUMB = 112


HINT = ("Click a confusion-matrix cell, or a class in the table, to see its test images "
        "here.")


class ErrorBrowser(QWidget):
    """Thumbnails of chosen evaluation rows, with Grad-CAM of the predicted class: a view
    of ``state.selection``'s pick of test images (a cell, a class's mistakes or a
    confidence bin), which a click anywhere in the window sets."""

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state or AppState()
        self.evaluation: Evaluation | None = None
        self.predictor = None  # loaded in the worker for the evaluation's checkpoint
        self.selection: dict = {}
        self.rows: np.ndarray = np.zeros(0, dtype=int)
        self.explained: dict[int, Explained] = {}
        self._worker: Worker | None = None
        self._stop = threading.Event()

        self.title = QLabel(HINT)
        self.title.setWordWrap(True)
        self.order = QComboBox()
        self.order.addItem("most confident first", True)
        self.order.addItem("least confident first", False)
        self.order.currentIndexChanged.connect(lambda: self._reselect())
        self.cam = QCheckBox("Grad-CAM")
        self.cam.setChecked(True)
        self.cam.setToolTip("Where the model found evidence for the class it predicted (the "
                            "last convolutional block's Grad-CAM), over the image it saw")
        self.cam.toggled.connect(self._redraw_icons)
        self.bins = QComboBox()
        self.bins.setToolTip("The images of one bin of the reliability diagram (top-class "
                             "confidence, before temperature scaling)")
        self.bins.activated.connect(self._bin_chosen)
        self.bins.addItem("Reliability bin…")
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.bins)
        top.addWidget(self.order)
        top.addWidget(self.cam)

        self.grid = QListWidget()
        self.grid.setViewMode(QListView.ViewMode.IconMode)
        self.grid.setIconSize(QSize(THUMB, THUMB))
        self.grid.setGridSize(QSize(THUMB + 16, THUMB + 34))
        self.grid.setResizeMode(QListView.ResizeMode.Adjust)
        self.grid.setMovement(QListView.Movement.Static)
        self.grid.setUniformItemSizes(True)
        self.grid.setWordWrap(True)
        self.grid.currentItemChanged.connect(self._show_current)
        self.large = FittedPicture(260)  # follows its room: never over the text below
        self.large.setMinimumSize(96, 96)
        self.detail = QLabel(" ")
        self.detail.setWordWrap(True)
        self.detail.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # the text's room is fixed (five lines, scrolled when a long name needs more): a
        # selected image never changes the browser's height, so the numbers and the
        # matrix above it stay where they are
        detail_room = QScrollArea()
        detail_room.setWidget(self.detail)
        detail_room.setWidgetResizable(True)
        detail_room.setFrameShape(QFrame.Shape.NoFrame)
        detail_room.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        detail_room.setFixedHeight(5 * self.detail.fontMetrics().lineSpacing() + 6)
        detail_room.viewport().setAutoFillBackground(False)  # the panel's own background
        self.detail.setAutoFillBackground(False)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.large, 1)
        side_layout.addWidget(detail_room)
        splitter = QSplitter()
        splitter.addWidget(self.grid)
        splitter.addWidget(side)
        splitter.setSizes([520, 240])
        self.status = QLabel(" ")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        self.state.events.selection.connect(self._selection_changed)

    # --- what to show ------------------------------------------------------------------
    def set_evaluation(self, evaluation: Evaluation | None) -> None:
        """A new evaluation: the old thumbnails belong to another model or split."""
        self.cancel()
        self.predictor = None  # best.pt may hold a later epoch now: load what was evaluated
        self.evaluation = evaluation
        self.bins.clear()
        self.bins.addItem("Reliability bin…")
        if evaluation is not None:
            bins = reliability_tables(evaluation)[0]
            for b in range(len(bins.counts) - 1, -1, -1):  # the confident end first
                if bins.counts[b]:
                    self.bins.addItem(f"{bins.edges[b]:.2f}–{bins.edges[b + 1]:.2f}: "
                                      f"{bins.counts[b]} images, {bins.accuracy[b]:.0%} right",
                                      b)
        self._show_nothing()

    def _show_nothing(self) -> None:
        """No pick: the hint, an empty grid (no title of an earlier pick over it)."""
        self.cancel()
        self.selection = {}
        self.rows = np.zeros(0, dtype=int)
        self.title.setText(HINT)
        self.grid.clear()
        self.explained.clear()
        self.large.show_image(None)
        self.detail.setText(" ")
        self.status.setText(" ")

    # the picks: each sets the state's selection, which the browser then shows
    def show_cell(self, true: int, predicted: int) -> None:
        self.state.select_images(cell=(true, predicted))

    def show_class_mistakes(self, true: int) -> None:
        self.state.select_images(class_index=true)

    def show_confidence_bin(self, b: int) -> None:
        """Bin ``b`` of the reliability diagram (top-class confidence in (lower, upper])."""
        self.state.select_images(confidence_bin=b)

    def _bin_chosen(self, index: int) -> None:
        b = self.bins.itemData(index)
        if b is not None:
            self.show_confidence_bin(b)

    def _selection_changed(self, selection: Selection) -> None:
        ev = self.evaluation
        picked = (selection.cell, selection.class_index, selection.confidence_bin)
        if ev is None or picked == (None, None, None):
            if self.selection:
                self._show_nothing()
            return
        if picked == self.selection.get("picked"):
            return  # the epoch changed, not the pick
        names = ev.class_names
        if selection.cell is not None:
            true, predicted = selection.cell
            what = ("correctly classified" if true == predicted
                    else f"predicted {names[predicted]}")
            self._select(f"True {names[true]}, {what}", picked, true=true,
                         predicted=predicted)
        elif selection.class_index is not None:
            self._select(f"True {names[selection.class_index]}, misclassified", picked,
                         true=selection.class_index, wrong=True)
        else:
            b, n = selection.confidence_bin, ev.n_bins
            self._select(f"Top-class confidence {b / n:.2f}–{(b + 1) / n:.2f}", picked,
                         confidence_bin=b)

    def _select(self, title: str, picked: tuple, **selection) -> None:
        self.selection = {"title": title, "picked": picked, **selection}
        self._reselect()

    def _reselect(self) -> None:
        ev, selection = self.evaluation, dict(self.selection)
        if ev is None or not selection:
            return
        title = selection.pop("title")
        selection.pop("picked")
        self.cancel()
        rows = ev.rows(**selection, most_confident_first=self.order.currentData())
        self.rows = rows[:MAX_IMAGES]
        more = f" (the first {MAX_IMAGES} shown)" if len(rows) > MAX_IMAGES else ""
        self.title.setText(f"<b>{title}</b>: {len(rows)} test image"
                           f"{'' if len(rows) == 1 else 's'}{more}")
        self.grid.clear()
        self.explained.clear()
        self.large.show_image(None)
        self.detail.setText(" ")
        if not len(self.rows):
            self.status.setText("No test image here.")
            return
        if ev.samples is None or ev.sample_index is None:
            self.status.setText("This evaluation does not know where its images are.")
            return
        predicted = ev.predicted
        for row in self.rows:
            item = QListWidgetItem(self._caption(int(row)))
            # the thumbnail's room before it arrives: the list sizes every item like the
            # first, which otherwise has only its caption's height
            item.setSizeHint(QSize(THUMB + 12, THUMB + 30))
            item.setData(Qt.ItemDataRole.UserRole, int(row))
            item.setToolTip(self._describe(int(row)))
            self.grid.addItem(item)
        items = [(int(r), int(ev.sample_index[r]), int(predicted[r])) for r in self.rows]
        self._stop = threading.Event()
        self.status.setText(f"Computing Grad-CAM for {len(items)} images…")
        self._worker = start_worker(
            _explain, self.predictor, ev.checkpoint, ev.samples, items, self._stop,
            yielded=self._arrived, errored=self._failed, finished=self._finished,
            stop=self._stop.set)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # --- arriving ------------------------------------------------------------------------
    def _arrived(self, item) -> None:
        if not isinstance(item, list):  # the loaded predictor, kept for the next selection
            self.predictor = item
            return
        shown = {self.grid.item(i).data(Qt.ItemDataRole.UserRole): self.grid.item(i)
                 for i in range(self.grid.count())}
        for explained in item:
            self.explained[explained.row] = explained
            widget_item = shown.get(explained.row)
            if widget_item is not None:
                self._set_icon(widget_item, explained)
        current = self.grid.currentItem()
        if current is not None:
            self._show_current(current)

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    def _finished(self) -> None:
        self._worker = None
        done = len(self.explained)
        if self.status.text().startswith("Computing"):
            self.status.setText(f"{done} of {len(self.rows)} images with Grad-CAM"
                                + (" (stopped)" if done < len(self.rows) else "") + ".")

    # --- drawing -------------------------------------------------------------------------
    def _picture(self, explained: Explained) -> np.ndarray:
        return explained.picture(0.45 if self.cam.isChecked() else 0.0) / 255.0

    def _set_icon(self, widget_item: QListWidgetItem, explained: Explained) -> None:
        if explained.error:
            widget_item.setText(f"⚠ {widget_item.text()}")
            widget_item.setToolTip(f"{widget_item.toolTip()}\n{explained.error}")
            return
        widget_item.setIcon(QIcon(array_pixmap(self._picture(explained), THUMB)))

    def _redraw_icons(self) -> None:
        for i in range(self.grid.count()):
            widget_item = self.grid.item(i)
            explained = self.explained.get(widget_item.data(Qt.ItemDataRole.UserRole))
            if explained is not None and not explained.error:
                widget_item.setIcon(QIcon(array_pixmap(self._picture(explained), THUMB)))
        current = self.grid.currentItem()
        if current is not None:
            self._show_current(current)

    def _caption(self, row: int) -> str:
        ev = self.evaluation
        return f"{ev.top_label()[0][row]:.1%} {Path(ev.names[row]).name}"

    def _describe(self, row: int) -> str:
        ev = self.evaluation
        pred = int(ev.predicted[row])
        raw, scaled = (ev.probabilities(method, [row])[0, pred]
                       for method in ("none", "temperature"))
        return (f"{ev.names[row]}\ntrue {ev.class_names[int(ev.labels[row])]}, predicted "
                f"{ev.class_names[pred]}\nconfidence {raw:.1%}, calibrated {scaled:.1%}")

    def _show_current(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is None:
            return
        row = current.data(Qt.ItemDataRole.UserRole)
        explained = self.explained.get(row)
        self.large.show_image(self._picture(explained) if explained is not None
                              and not explained.error else None)
        text = self._describe(row).replace("\n", "<br>")
        if explained is not None and explained.error:
            text += f"<br>⚠ {explained.error}"
        elif self.cam.isChecked():
            text += "<br><span style='color:#666'>overlay: Grad-CAM of the predicted class</span>"
        self.detail.setText(text)

    def picture_shown(self) -> QIcon | None:
        """The first thumbnail's icon (tests)."""
        return self.grid.item(0).icon() if self.grid.count() else None


def _explain(predictor, checkpoint: str, samples, items, stop: threading.Event):
    """Off the GUI thread: the predictor (loaded once per checkpoint), then Grad-CAM
    results in chunks of 8 as they are done."""
    from olsdesk.core.predictor import Predictor

    if predictor is None or predictor.source != checkpoint:
        predictor = Predictor.from_checkpoint(checkpoint)
        yield predictor
    yield from in_chunks(iter_explain(predictor, samples, items, batch_size=8, stop=stop), 8)
