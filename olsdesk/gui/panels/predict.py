"""Predict: drop images, DICOMs or folders; see each prediction with its confidence.

Files are predicted in a worker thread, with progress and Cancel. Each gets a row
(sortable, so the least confident come first) with the raw and the temperature-scaled
confidence side by side, the entropy, the size of its conformal prediction set, and a
mark when it is unlike the training data or of low confidence; the selected row shows
its preview, its set and top-5 bars. Failures are rows too, with their one-sentence reason.
"""

from __future__ import annotations

import html
import math
import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from olsdesk.core.data.sources import FileSamples
from olsdesk.core.names import short_names
from olsdesk.core.predictor import (
    SET_SHOWN,
    Prediction,
    Predictor,
    expand_paths,
    write_predictions_csv,
)
from olsdesk.core.saliency import Explained, iter_explain
from olsdesk.core.state import AppState, CheckpointRef
from olsdesk.errors import OlsdeskError
from olsdesk.gui.panels.common import NumberItem, array_pixmap, row_table
from olsdesk.gui.resources import resource
from olsdesk.gui.widgets import DialogFolders
from olsdesk.gui.workers import Worker, in_chunks, start_worker

COLUMNS = ("file", "top-1", "confidence", "calibrated", "entropy", "set", "note")
SET, NOTE = COLUMNS.index("set"), COLUMNS.index("note")
SAMPLES = resource("samples")


def _predict(predictor: Predictor | None, checkpoint: str, paths: list[str],
             listed: frozenset[str], cancel: threading.Event, progress):
    """Load the checkpoint if needed, then yield the predictor, how many of the files are
    listed already (by this model: not predicted again) and the predictions in chunks as
    they are done (off the GUI thread; rows appear while a folder runs)."""
    if predictor is None or predictor.source != checkpoint:
        predictor = Predictor.from_checkpoint(checkpoint)
    yield predictor
    files = expand_paths(paths)
    new = [f for f in files if str(f) not in listed]
    yield len(files) - len(new)
    yield from in_chunks(predictor.iter_predict(new, progress=progress, cancel=cancel,
                                                thumbnails=True), 32)


def _explain_file(predictor: Predictor, path: str, index: int, class_index: int,
                  stop: threading.Event) -> Explained | None:
    """Off the GUI thread: one file's Grad-CAM for ``class_index`` (None when stopped)."""
    done = list(iter_explain(predictor, FileSamples([path], np.zeros(1, int)),
                             [(index, 0, class_index)], stop=stop))
    return done[0] if done else None


class PredictPanel(QWidget):
    FLUSH_MS = 250  # predictions reach the list at most four times a second
    SORT_MS = 2000  # and a growing list is sorted again at most every 2 s (and at the end):
    # Qt sorts 20,000 rows in 0.1-0.3 s
    predictions_finished = Signal(int)  # how many files were handled
    _progressed = Signal(int, int)  # done, total: from the worker thread, queued here

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.state = state or AppState()  # the checkpoint in use is the window's
        self.checkpoint: str | None = None
        self.checkpoint_note = ""
        self.predictor: Predictor | None = None
        self.predictions: list[Prediction] = []
        self.models: list[str] = []  # the model each prediction came from (its note)
        # and that model's temperature and class order (the model may be gone since)
        self.calibration: list[tuple[float, tuple[str, ...]]] = []
        self._running_model = ""
        self.queue: list[str] = []
        self._worker: Worker | None = None
        self._batch: list[Prediction] = []  # the predictions of the running drop
        # arrived and not listed yet: the list takes them at most every FLUSH_MS, in one
        # insertion (one a batch of 32 made a 20,000-file drop freeze the window)
        self._pending: list[Prediction] = []
        self._flush_timer = QTimer(self, singleShot=True, interval=self.FLUSH_MS)
        self._flush_timer.timeout.connect(self._flush)
        self._sort_timer = QTimer(self, singleShot=True, interval=self.SORT_MS)
        self._sort_timer.timeout.connect(self._sort)
        self._already = 0  # files of the running drop listed already by this model
        self._name_width = 0  # the widest file name listed, in pixels
        self._same_name: dict[str, tuple] = {}  # a file name -> its first (item, path)
        self._short_of: tuple[tuple, dict] = ((), {})  # class names -> as the list shows them
        self._cancel = threading.Event()
        self._progressed.connect(self._show_progress)
        self.folders = DialogFolders()  # where its file dialogs open (the window's)
        self._select_when_done: str | None = None  # a file to select once predicted
        self.saliency: dict[int, Explained] = {}  # Grad-CAM of a prediction, by its index
        self._cam_worker: Worker | None = None
        self._cam_stop = threading.Event()

        self.model_label = QLabel("No model yet: train, or load a checkpoint.")
        self.model_label.setWordWrap(True)
        load = QPushButton("Load checkpoint…")
        load.clicked.connect(self.choose_checkpoint)
        add = QPushButton("Add images…")
        add.clicked.connect(self.choose_files)
        samples = QPushButton("Try the samples")
        samples.setToolTip(str(SAMPLES))
        samples.clicked.connect(lambda: self.predict_paths([str(SAMPLES)]))
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip("Predictions whose confidence is below this are marked")
        self.threshold.valueChanged.connect(self._refresh_notes)
        export = QPushButton("Export CSV…")
        export.clicked.connect(self.choose_export)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        buttons = QHBoxLayout()  # below the model's name: the window fits 1024 px
        for w in (load, add, samples):
            buttons.addWidget(w)
        buttons.addStretch(1)
        for w in (QLabel("low confidence below"), self.threshold, export, clear):
            buttons.addWidget(w)
        top = QVBoxLayout()
        top.addWidget(self.model_label)
        top.addLayout(buttons)

        self.table = row_table(COLUMNS, single=True)
        # long names lose their middle, never their end: .dcm and .png stay apart
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)  # fit to names
        for column in range(1, NOTE):  # as wide as they are (class names shortened)
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(NOTE, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 160)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.drop_hint = QLabel("Drop images, DICOMs or folders anywhere on the window")
        self.drop_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.drop_hint.setStyleSheet("color: #666; border: 2px dashed #aaa; padding: 14px;")

        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(220, 220)
        self.cam_box = QCheckBox("Grad-CAM overlay")
        self.cam_box.setChecked(True)
        self.cam_box.setToolTip("Where the model found evidence for its top class (the last "
                                "convolutional block's Grad-CAM), over the image it saw")
        self.cam_box.toggled.connect(lambda _checked: self._show_selected())
        self.detail = QLabel(" ")
        self.detail.setWordWrap(True)
        self.bars_view = pg.PlotWidget()
        self.bars_view.setMouseEnabled(False, False)
        self.bars_view.setXRange(0, 1, padding=0.02)
        self.bars_view.getPlotItem().vb.disableAutoRange(pg.ViewBox.XAxis)
        self.bars_view.setLabel("bottom", "probability")
        self.bars_view.getAxis("bottom").enableAutoSIPrefix(False)
        self.bars = pg.BarGraphItem(x0=0, y=[], height=0.6, width=[], brush="#0067A5")
        self.calibrated_bars = pg.ScatterPlotItem(symbol="|", size=18, pen=pg.mkPen("#BE0032",
                                                                                     width=3))
        self.bars_view.addItem(self.bars)
        self.bars_view.addItem(self.calibrated_bars)
        self.bars_view.invertY(True)
        self.bars_view.hide()  # until a predicted row is chosen
        # it shrinks with the side panel instead of being clipped by it (a clipped chart
        # loses its right end: the 0.9-1.0 range where confident predictions sit)
        self.bars_view.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)
        self.bars_view.setMinimumHeight(170)  # five named bars, whatever the text above says
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(self.cam_box)
        side_layout.addWidget(self.preview)
        side_layout.addWidget(self.detail)
        side_layout.addWidget(self.bars_view, 1)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.drop_hint)
        left_layout.addWidget(self.table, 1)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(side)
        splitter.setSizes([650, 350])

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m files")
        self.progress.hide()
        # rows predicted by an earlier model than the one now chosen are marked, and can be
        # predicted again with one click
        self.repredict_button = QPushButton("Re-predict with the current model")
        self.repredict_button.hide()
        self.repredict_button.clicked.connect(self.repredict)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel(" ")
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(self.repredict_button)
        bottom.addWidget(self.cancel_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)
        self.state.events.checkpoint.connect(self._checkpoint_changed)
        self._checkpoint_changed(self.state.checkpoint)

    # --- which model -------------------------------------------------------------------
    def set_checkpoint(self, path: str | Path, note: str = "") -> None:
        """Use this checkpoint for the next predictions (and in Evaluate: one checkpoint)."""
        self.state.set_checkpoint(CheckpointRef(str(path), note=note))

    def _checkpoint_changed(self, ref: CheckpointRef | None) -> None:
        path, note = (ref.path, ref.note) if ref is not None else (None, "")
        if path != self.checkpoint or note != self.checkpoint_note:
            self.checkpoint, self.checkpoint_note = path, note
            self.predictor = None  # reload: the file on disk may have changed
            self.model_label.setText(f"Model: {self.model_name}" if path else
                                     "No model yet: train, or load a checkpoint.")
            self._refresh_notes()  # rows of the previous model are marked as such

    @property
    def model_name(self) -> str:
        return self.checkpoint_note or Path(self.checkpoint or "").name

    def stale_rows(self) -> int:
        """Rows predicted by another model than the current one."""
        return sum(model != self.model_name for model in self.models)

    def repredict(self) -> None:
        """Predict every listed file again with the current model."""
        paths = [p.path for p in self.predictions]
        if paths:
            self.clear()
            self.predict_paths(paths)  # queued if a drop is still being predicted

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint",
                                              self.folders.start("checkpoint"),
                                              "olsdesk checkpoints (*.pt);;All files (*)")
        if path:
            self.folders.remember("checkpoint", path)
            self.set_checkpoint(path, f"{Path(path).parent.parent.name}/{Path(path).name}")

    # --- input ---------------------------------------------------------------------------
    def choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Images to predict", self.folders.start("images"),
            "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp *.dcm);;All files (*)")
        if paths:
            self.folders.remember("images", paths[0])
            self.predict_paths(paths)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.predict_paths(paths)

    def predict_paths(self, paths: list[str], select: bool = False) -> None:
        """Predict files and folders in the worker; queued while another batch runs.
        With ``select``, the first of them is selected when it arrives (its preview and
        Grad-CAM shown)."""
        if self.checkpoint is None:
            self.status.setText("No model to predict with yet: train a run or load a checkpoint.")
            return
        if select and paths:
            self._select_when_done = str(paths[0])
        self.queue.extend(paths)
        if self._worker is None:
            self._start()

    @property
    def busy(self) -> bool:
        """True while files are being predicted."""
        return self._worker is not None

    def _start(self) -> None:
        paths, self.queue = self.queue, []
        self._cancel.clear()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.status.setText("Predicting…")
        self._running_model = self.model_name
        listed = frozenset(p.path for p, model in zip(self.predictions, self.models,
                                                      strict=True) if model == self.model_name)
        self._worker = start_worker(
            _predict, self.predictor, self.checkpoint, paths, listed, self._cancel,
            self._progressed.emit, yielded=self._arrived, returned=self._done,
            errored=self._failed,
            finished=self._worker_finished, stop=self._cancel.set)

    @Slot()
    def cancel(self) -> None:
        self.queue.clear()
        self._cancel.set()

    @Slot(int, int)
    def _show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _arrived(self, item) -> None:
        if isinstance(item, Predictor):
            self.predictor = item
            self._batch, self._already = [], 0
            return
        if isinstance(item, int):
            self._already = item
            return
        self._batch.extend(item)
        self._pending.extend(item)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _flush(self) -> None:
        """List the predictions that arrived since the last time."""
        self._flush_timer.stop()
        results, self._pending = self._pending, []
        if results:
            self._add(results)

    def _sort(self) -> None:
        self._sort_timer.stop()
        self.table.setSortingEnabled(True)  # sorts by the chosen column again

    def _done(self, _=None) -> None:
        """What this drop did, and what the whole list holds now."""
        self._flush()
        self._sort()
        results = self._batch
        failed = sum(not r.ok for r in results)
        cancelled = " (cancelled)" if self._cancel.is_set() else ""
        already = f", {self._already} listed already" if self._already else ""
        total = len(self.predictions)
        unread = sum(not p.ok for p in self.predictions)
        self.status.setText(
            f"This drop: {len(results) - failed} predicted, {failed} could not be read"
            f"{already}{cancelled}. The list: {total - unread} predicted, {unread} unreadable;"
            f" T = {self.predictor.temperature:.2f}.")
        self.predictions_finished.emit(len(results))

    def _failed(self, message: str) -> None:
        self._flush()  # what was predicted before stays listed
        self._sort()
        self.status.setText(message)
        self.queue.clear()
        self.predictions_finished.emit(0)

    def _worker_finished(self) -> None:
        self._worker = None
        self.progress.hide()
        self.cancel_button.hide()
        if self.queue:
            self._start()

    # --- the list ------------------------------------------------------------------------
    def _add(self, results: list[Prediction]) -> None:
        self.drop_hint.hide()
        self.table.setSortingEnabled(False)
        first = self.table.rowCount()
        self.table.setRowCount(first + len(results))  # one insertion, not one a row
        for row, result in enumerate(results, start=first):
            self.predictions.append(result)
            self.models.append(self._running_model)
            self.calibration.append((self.predictor.temperature, self.predictor.class_names))
            name = QTableWidgetItem(Path(result.path).name)
            name.setToolTip(result.path)
            self._tell_apart(name, result.path)
            name.setData(Qt.ItemDataRole.UserRole, len(self.predictions) - 1)
            self.table.setItem(row, 0, name)
            if result.ok:
                top = QTableWidgetItem(self._short(result.top_classes[0]))
                top.setToolTip(result.top_classes[0])
                self.table.setItem(row, 1, top)
                for col, value in ((2, result.confidence), (3, result.calibrated_confidence)):
                    self.table.setItem(row, col, NumberItem(value, f"{value:.1%}"))
                self.table.setItem(row, 4, NumberItem(result.entropy, f"{result.entropy:.2f}"))
                self.table.setItem(row, SET, self._set_item(result))
            else:
                for col in range(1, NOTE):
                    self.table.setItem(row, col, NumberItem(math.nan, "—"))
            self.table.setItem(row, NOTE, QTableWidgetItem(""))
        self._style_rows(range(first, self.table.rowCount()))  # before sorting moves them
        if not self._sort_timer.isActive():
            self._sort_timer.start()
        self._fit_names(results)
        wanted = self._select_when_done
        if wanted is not None and any(r.path == wanted for r in results):
            self._select_when_done = None
            for row in range(self.table.rowCount()):
                index = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
                if self.predictions[index].path == wanted:
                    self.table.selectRow(row)
                    break

    @staticmethod
    def _set_item(result: Prediction) -> QTableWidgetItem:
        """The set's size (sorts: the most doubtful first), its classes on hover."""
        if result.prediction_set is None:
            item = NumberItem(math.nan, "—")
            item.setToolTip("the checkpoint keeps no conformal calibration (saved before "
                            "olsdesk 0.4): no prediction set")
            return item
        size = len(result.prediction_set)
        item = NumberItem(size, str(size))
        item.setToolTip(f"prediction set: {result.set_summary(3 * SET_SHOWN)}: the classes "
                        "that hold the true "
                        f"one for {result.set_coverage:.0%} of validation-like images")
        return item

    def _short(self, name: str) -> str:
        """A class as the list shows it: the model's names shortened one way (as the other
        views do, "MR/knee/bon…_edema"), the whole name on hover."""
        names = self.predictor.class_names
        if self._short_of[0] != names:
            self._short_of = (names, dict(zip(names, short_names(names, limit=24),
                                              strict=True)))
        return self._short_of[1].get(name, name)

    def _tell_apart(self, item: QTableWidgetItem, path: str) -> None:
        """Files of one name (000.png in every class folder of a test split) are listed
        with their folder, "tear/000.png", all of them as soon as a second arrives."""
        first = self._same_name.setdefault(Path(path).name, (item, path))
        if first[0] is not item:  # the name seen before: the first and this one renamed
            for each, where in (first, (item, path)):
                each.setText(f"{Path(where).parent.name}/{Path(where).name}")

    def _fit_names(self, results: list[Prediction]) -> None:
        """The file column as wide as its widest name (up to half the table, or 280 px):
        names are whole, or lose their middle only when very long."""
        metrics = self.table.fontMetrics()
        widest = max((metrics.horizontalAdvance(self.table.item(row, 0).text())
                      for row in range(self.table.rowCount() - len(results),
                                       self.table.rowCount())), default=0)
        if widest > self._name_width:
            self._name_width = widest
            limit = max(self.table.viewport().width() // 2, 280)
            self.table.setColumnWidth(0, min(widest + 24, limit))

    def _refresh_notes(self) -> None:
        """Every row's note and colours again (the threshold or the model changed)."""
        self._style_rows(range(self.table.rowCount()))
        self.repredict_button.setVisible(self.stale_rows() > 0)

    def _style_rows(self, rows: range) -> None:
        """These rows' notes and colours: greyed when another model predicted them, the
        marks of unfamiliar and low-confidence images."""
        threshold = self.threshold.value()
        current = self.model_name
        for row in rows:
            index = self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)
            result, model = self.predictions[index], self.models[index]
            note = self.table.item(row, NOTE)
            stale = model != current
            for col in range(1, NOTE):
                cell = self.table.item(row, col)
                if cell is not None:
                    cell.setForeground(QColor("#999999" if stale else "#000000"))
            if stale:
                note.setText("⟲ earlier model")
                note.setForeground(QColor("#777777"))
                note.setToolTip(f"predicted with the previous model ({model}); press "
                                "Re-predict to update")
                continue
            if not result.ok:
                note.setText(result.error)
                note.setForeground(QColor("#b00020"))
            else:
                marks = ("⚠ unlike the training data" if result.unfamiliar else "",
                         "⚠ low confidence" if result.confidence < threshold else "",
                         result.note)  # e.g. "frame 61 of 120"
                note.setText(" · ".join(filter(None, marks)))
                note.setForeground(QColor("#b00020" if result.unfamiliar else "#b36b00"
                                          if marks[1] else "#333333"))
            note.setToolTip(result.unfamiliar_sentence or note.text())

    def low_confidence(self) -> list[Prediction]:
        return [p for p in self.predictions if p.ok and p.confidence < self.threshold.value()]

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        index = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        result = self.predictions[index]
        temperature, names = self.calibration[index]
        self._show_preview(index)
        if not result.ok:
            self.detail.setText(f"<b>{html.escape(Path(result.path).name)}</b><br>"
                                f"{html.escape(result.error)}")
            self.bars.setOpts(y=[], width=[])
            self.calibrated_bars.clear()
            self.bars_view.hide()  # an empty chart only shows an upside-down axis
            return
        self.detail.setText(
            f"<b>{html.escape(self.table.item(rows[0].row(), 0).text())}</b>: "
            f"{html.escape(result.top_classes[0])}<br>confidence "
            f"{result.confidence:.1%}, calibrated {result.calibrated_confidence:.1%} "
            f"(T = {temperature:.2f}), entropy {result.entropy:.2f} nats<br>"
            + (f"prediction set {html.escape(result.set_summary())}<br>"
               if result.set_text else "")
            + (f"<span style='color:#b00020'>⚠ {html.escape(result.unfamiliar_sentence)}"
               "</span><br>" if result.unfamiliar else "")
            + "<span style='color:#666'>chart: bars raw, red marks calibrated</span>"
            + ("<br><span style='color:#b36b00'>⚠ low confidence</span>"
               if result.confidence < self.threshold.value() else ""))
        k = len(result.top_classes)
        calibrated = [result.calibrated_probabilities[names.index(c)] for c in result.top_classes]
        self.bars.setOpts(x0=0, y=np.arange(k), height=0.6, width=list(result.top_probabilities))
        self.calibrated_bars.setData(x=calibrated, y=np.arange(k))
        short = dict(zip(names, short_names(names, limit=16), strict=True))
        # short names and a short title: the chart's own minimum width must fit the side
        # panel, or its right end (where confident predictions sit) is cut off
        self.bars_view.getAxis("left").setTicks([[(i, c) for i, c in
                                                  enumerate(short[c] for c in
                                                            result.top_classes)]])
        self.bars_view.setYRange(-0.5, k - 0.5)
        self.bars_view.setXRange(0, 1, padding=0.02)  # a 99.6 % mark stays on the chart
        self.bars_view.setTitle(f"top {k}", size="9pt")
        self.bars_view.setToolTip("bars: the model's probabilities; red marks: the same after "
                                  "temperature scaling (calibrated)")
        self.bars_view.show()

    def _show_preview(self, index: int) -> None:
        """The file's thumbnail, or with the overlay its Grad-CAM over the model's input
        (computed in a worker the first time, by the model that made the prediction)."""
        result = self.predictions[index]
        explained = self.saliency.get(index)
        if self.cam_box.isChecked() and explained is not None and not explained.error:
            self.preview.setPixmap(array_pixmap(explained.picture() / 255.0, 220))
            self.preview.setToolTip(f"Grad-CAM of {result.top_classes[0]} over the image "
                                    "the model saw")
            return
        self.preview.setToolTip(explained.error if explained is not None and explained.error
                                else "")
        if result.thumbnail is not None:
            self.preview.setPixmap(array_pixmap(result.thumbnail / 255.0, 220))
        else:
            self.preview.clear()
        current = self.models[index] == self.model_name and self.predictor is not None
        if self.cam_box.isChecked() and result.ok and explained is None and current:
            self._cam_stop.set()  # a map no longer wanted
            self._cam_stop = threading.Event()
            top = self.predictor.class_names.index(result.top_classes[0])
            self._cam_worker = start_worker(
                _explain_file, self.predictor, result.path, index, top, self._cam_stop,
                returned=self._cam_arrived, errored=self.status.setText,
                finished=self._cam_finished, stop=self._cam_stop.set)

    def _cam_arrived(self, explained: Explained | None) -> None:
        if explained is None:
            return
        self.saliency[explained.row] = explained
        rows = self.table.selectionModel().selectedRows()
        if rows and self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) == \
                explained.row:
            self._show_preview(explained.row)

    def _cam_finished(self) -> None:
        self._cam_worker = None

    @property
    def cam_busy(self) -> bool:
        return self._cam_worker is not None

    def bars_shown(self) -> int:
        """How many top-k bars the selected file's chart shows."""
        return len(self.bars.opts["width"])

    def clear(self) -> None:
        self._flush_timer.stop()
        self._pending.clear()
        self._cam_stop.set()
        self.saliency.clear()
        self.predictions.clear()
        self.models.clear()
        self.calibration.clear()
        self.repredict_button.hide()
        self.bars_view.hide()
        self.table.setRowCount(0)
        self._sort()  # sorting on again, with nothing left to sort
        self._name_width = 0
        self._same_name.clear()
        self.preview.clear()  # nothing of a cleared file stays on screen
        self.preview.setToolTip("")
        self.detail.setText(" ")
        self.status.setText("The list is empty.")
        self.drop_hint.show()

    def choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export predictions",
            str(Path(self.folders.start("predictions")) / "predictions.csv"), "CSV (*.csv)")
        if path:
            self.folders.remember("predictions", path)
            self.export_csv(path)

    def export_csv(self, path: str | Path) -> None:
        try:
            write_predictions_csv(self.predictions, path, self.threshold.value())
        except OlsdeskError as exc:  # a full disk: the file is as it was
            self.status.setText(str(exc))
            return
        self.status.setText(f"Exported {len(self.predictions)} rows to {path}.")

