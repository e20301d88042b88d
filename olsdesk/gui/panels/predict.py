"""Predict: drop images, DICOMs or folders; see each prediction with its confidence.

Files are predicted in a worker thread, with progress and Cancel. Each gets a row
(sortable, so the least confident come first) with the raw and the temperature-scaled
confidence side by side, the entropy, the size of its conformal prediction set, and a
mark when it is unlike the training data or of low confidence; the selected row shows
its preview, its set and top-5 bars. Failures are rows too, with their one-sentence reason.
"""

from __future__ import annotations

import html
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QApplication,
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
    QTableView,
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
from olsdesk.gui.panels.common import array_pixmap, rows_view
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
                                                thumbnails=True, expanded=True), 32)


def _explain_file(predictor: Predictor, path: str, index: int, class_index: int,
                  stop: threading.Event) -> Explained | None:
    """Off the GUI thread: one file's Grad-CAM for ``class_index`` (None when stopped)."""
    done = list(iter_explain(predictor, FileSamples([path], np.zeros(1, int)),
                             [(index, 0, class_index)], stop=stop))
    return done[0] if done else None


class PredictionRows(QAbstractTableModel):
    """The Predict list: a model over the panel's predictions, drawn by a QTableView.

    A row's cells are computed when the view draws them (tens of rows, whatever the list
    holds), so adding rows costs one insertion and a change of threshold or model one
    repaint: a QTableWidget made a cell object for each of 20,000 rows x 7 columns and
    restyled them all. Sorting (a header click, or ``sort``) orders the rows by numpy's
    stable sort of the column's values, failed files last in either order, and keeps the
    list sorted as rows arrive; column -1 is the order they arrived in."""

    def __init__(self, predictions: list[Prediction], models: list[str], parent=None) -> None:
        super().__init__(parent)
        self.predictions, self.models = predictions, models  # the panel's lists
        self.threshold = 0.5  # confidence below it is marked ("⚠ low confidence")
        self.current = ""  # the model in use: rows of others are marked
        self.cells: list[tuple[str, str, str]] = []  # a prediction's file name, folder, top-1
        self.values = np.empty((0, NOTE - 2))  # confidence, calibrated, entropy, set size
        self.order = np.empty(0, np.int64)  # view row -> prediction index
        self.position = np.empty(0, np.int64)  # prediction index -> view row
        self.same_name: Counter[str] = Counter()  # how often each file name is listed
        self.first: dict[str, int] = {}  # a file name -> the first prediction of it
        self.sort_column, self.sort_order = -1, Qt.SortOrder.AscendingOrder
        self._short: dict[str, str] = {}  # a class name -> as the list shows it
        self._short_of: tuple[str, ...] = ()

    # --- what the view asks ----------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt's names
        return 0 if parent.isValid() else len(self.cells)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if role not in _ROLES:
            return None
        return self._answer(self.order[index.row()].item(), index.column(), role)

    def multiData(self, index: QModelIndex, roles) -> None:  # noqa: N802 - Qt's name
        """All the roles a cell is drawn with, in one call (Qt's delegates ask for seven):
        while the worker thread runs Python, each call from Qt waits for the GIL, and a
        call a role made a repaint of the list take 200 ms instead of 10."""
        i, column = self.order[index.row()].item(), index.column()
        for wanted in roles:
            role = wanted.role()
            if role in _ROLES:
                wanted.setData(self._answer(i, column, role))

    def _answer(self, i: int, column: int, role):
        """Prediction ``i``'s cell in ``column``: its ``role`` (one of _ROLES)."""
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(i, column)
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == NOTE:
                return _COLOURS[self._note(i)[2]]
            # the palette's text colour (a dark theme's too), grey for an earlier model's
            return _COLOURS["stale"] if column and self.models[i] != self.current else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tip(i, column)
        return i

    def text(self, i: int, column: int) -> str:
        """Prediction ``i``'s cell in ``column``, as the list shows it."""
        name, folder, top = self.cells[i]
        if column == 0:  # 000.png of every class folder: "tear/000.png"
            return f"{folder}/{name}" if self.same_name[name] > 1 else name
        if column == NOTE:
            return self._note(i)[0]
        if column == 1:
            return top
        value = self.values[i, column - 2]
        if value != value:  # a failed file (or a checkpoint without conformal sets)
            return "—"
        return f"{value:.1%}" if column < 4 else f"{value:.2f}" if column == 4 else \
            str(int(value))

    def tip(self, i: int, column: int) -> str | None:
        result = self.predictions[i]
        if column == 0:
            return result.path
        if column == 1 and result.ok:
            return result.top_classes[0]
        if column == SET and result.ok:
            if result.prediction_set is None:
                return ("the checkpoint keeps no conformal calibration (saved before "
                        "olsdesk 0.4): no prediction set")
            return (f"prediction set: {result.set_summary(3 * SET_SHOWN)}: the classes that "
                    f"hold the true one for {result.set_coverage:.0%} of validation-like "
                    "images")
        if column == NOTE:
            return self._note(i)[1]
        return None

    def _note(self, i: int) -> tuple[str, str, str]:
        """The note of prediction ``i``, its tooltip and its colour's name: another model
        predicted it, it could not be read, it is unfamiliar or of low confidence."""
        result, model = self.predictions[i], self.models[i]
        if model != self.current:
            return ("⟲ earlier model", f"predicted with the previous model ({model}); press "
                    "Re-predict to update", "earlier")
        if not result.ok:
            return result.error, result.error, "error"
        low = self.values[i, 0] < self.threshold
        marks = ("⚠ unlike the training data" if result.unfamiliar else "",
                 "⚠ low confidence" if low else "", result.note)  # e.g. "frame 61 of 120"
        text = " · ".join(filter(None, marks))
        return (text, result.unfamiliar_sentence or text,
                "error" if result.unfamiliar else "low" if low else "note")

    def prediction(self, row: int) -> int:
        """The index in the panel's predictions of the prediction on view row ``row``."""
        return int(self.order[row])

    # --- what the panel changes ---------------------------------------------------------
    def add(self, results: list[Prediction], class_names: tuple[str, ...]) -> None:
        """Rows for predictions just appended to the panel's list: one insertion, then
        the list sorted again when it is sorted by a column."""
        if class_names != self._short_of:
            self._short_of = class_names
            self._short = dict(zip(class_names, short_names(class_names, limit=24),
                                   strict=True))
        first = len(self.cells)
        values = np.full((len(results), NOTE - 2), np.nan)
        names = []
        for row, result in enumerate(results):
            path = Path(result.path)
            names.append(path.name)
            self.same_name[path.name] += 1
            self.first.setdefault(path.name, first + row)
            top = self._short.get(result.top_classes[0], result.top_classes[0]) \
                if result.ok else "—"
            self.cells.append((path.name, path.parent.name, top))
            if result.ok:
                values[row, :3] = (result.confidence, result.calibrated_confidence,
                                   result.entropy)
                if result.prediction_set is not None:
                    values[row, 3] = len(result.prediction_set)
        self.beginInsertRows(QModelIndex(), first, len(self.cells) - 1)
        self.values = np.concatenate([self.values, values])
        self.order = np.concatenate([self.order, np.arange(first, len(self.cells))])
        self.position = np.concatenate([self.position, np.arange(first, len(self.cells))])
        self.endInsertRows()
        if self.sort_column >= 0:
            self._reorder()
        elif any(self.same_name[name] == 2 for name in names):
            self._changed(0, 0)  # a first file of a name now shows its folder too

    def restyle(self, threshold: float, current: str) -> None:
        """Notes and colours for this low-confidence threshold and model in use."""
        self.threshold, self.current = threshold, current
        self._changed(1, NOTE)

    def _changed(self, first: int, last: int) -> None:
        """Draw these columns again."""
        if self.cells:
            self.dataChanged.emit(self.index(0, first), self.index(len(self.cells) - 1, last))
            if first <= self.sort_column <= last:
                self._reorder()

    def clear(self) -> None:
        """Nothing listed (the panel has emptied its lists)."""
        self.beginResetModel()
        self.cells.clear()
        self.values = self.values[:0]
        self.order = self.position = self.order[:0]
        self.same_name.clear()
        self.first.clear()
        self.endResetModel()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self.sort_column, self.sort_order = column, order
        self._reorder()

    def _reorder(self) -> None:
        """The rows in the sort's order; selected rows stay selected."""
        n = len(self.cells)
        column, descending = self.sort_column, self.sort_order == Qt.SortOrder.DescendingOrder
        if column < 0 or n == 0:
            order = np.arange(n)
        elif 2 <= column < NOTE:  # numbers; NaN (failed, no set) last either way
            values = self.values[:, column - 2]
            missing = np.isnan(values)
            keys = np.where(missing, 0.0, -values if descending else values)
            order = np.lexsort((keys, missing))  # stable: ties in the order they arrived
        else:
            texts = [self.text(i, column) for i in range(n)]
            last = ([not r.ok for r in self.predictions] if column == 1 else [False] * n)
            order = sorted(range(n), key=texts.__getitem__, reverse=descending)
            order = np.array([i for i in order if not last[i]] + [i for i in order if last[i]],
                             dtype=np.int64)
        self.layoutAboutToBeChanged.emit()
        kept = self.persistentIndexList()
        was = [(int(self.order[ix.row()]), ix.column()) for ix in kept]
        self.order = np.asarray(order, dtype=np.int64)
        self.position = np.empty(n, np.int64)
        self.position[self.order] = np.arange(n)
        self.changePersistentIndexList(kept, [self.index(int(self.position[i]), c)
                                              for i, c in was])
        self.layoutChanged.emit()


_ROLES = frozenset((Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole,
                    Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.UserRole))
_COLOURS = {name: QColor(colour) for name, colour in (
    ("stale", "#999999"), ("earlier", "#777777"), ("error", "#b00020"),
    ("low", "#b36b00"), ("note", "#333333"))}


class PredictPanel(QWidget):
    FLUSH_MS = 250  # predictions reach the list at most four times a second
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
        self._already = 0  # files of the running drop listed already by this model
        self._widths: list[int] = []  # the list's columns' widths that fit their texts
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

        self.rows = PredictionRows(self.predictions, self.models, self)
        self.table = rows_view(QTableView(), single=True)
        self.table.setModel(self.rows)
        # long names lose their middle, never their end: .dcm and .png stay apart
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.verticalHeader().hide()  # a sorted list's row numbers tell nothing
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header = self.table.horizontalHeader()
        # columns fitted to what they hold as rows arrive (ResizeToContents would ask a
        # thousand rows' cells at every addition), the note stretched
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(NOTE, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # as they arrive, at first
        self.table.setSortingEnabled(True)
        self._fit_columns([])
        self.table.selectionModel().selectionChanged.connect(self._show_selected)
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
        current = self.model_name
        return sum(model != current for model in self.models)

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
        # the window laid out again for the progress bar now, before the worker competes
        # for the GIL: later, a relayout's calls into Python each waited for it (45 ms)
        QApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)
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

    def _done(self, _=None) -> None:
        """What this drop did, and what the whole list holds now."""
        self._flush()
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
        first = len(self.predictions)
        self.predictions.extend(results)
        self.models.extend([self._running_model] * len(results))
        self.calibration.extend([(self.predictor.temperature, self.predictor.class_names)]
                                * len(results))
        self.rows.add(results, self.predictor.class_names)
        self._fit_columns(range(first, len(self.predictions)))
        wanted = self._select_when_done
        if wanted is not None:
            index = next((i for i in range(first, len(self.predictions))
                          if self.predictions[i].path == wanted), None)
            if index is not None:
                self._select_when_done = None
                self.table.selectRow(int(self.rows.position[index]))

    def _fit_columns(self, added) -> None:
        """Each column as wide as its header and the texts of the rows ``added`` (the
        file names up to half the table, or 280 px): names are whole, or lose their
        middle only when very long. Columns widen only, as rows arrive."""
        metrics = self.table.fontMetrics()
        if not self._widths:  # the headers (and their sort arrows), numbers at their widest
            self._widths = [max(metrics.horizontalAdvance(header) + 32,
                                metrics.horizontalAdvance(widest) + 24) for header, widest in
                            zip(COLUMNS[:NOTE], ("", "", "100.0%", "100.0%", "10.00", "9999"),
                                strict=True)]
        widths = list(self._widths)
        for i in added:
            for column in (0, 1):
                text = self.rows.text(i, column)
                widths[column] = max(widths[column], metrics.horizontalAdvance(text) + 24)
        # a file's name, once its folder is shown beside it (a second file of the name)
        for i in added:
            name = self.rows.cells[i][0]
            if self.rows.same_name[name] > 1:
                text = self.rows.text(self.rows.first[name], 0)
                widths[0] = max(widths[0], metrics.horizontalAdvance(text) + 24)
        widths[0] = min(widths[0], max(self.table.viewport().width() // 2, 280))
        for column, width in enumerate(widths):
            if width != self.table.columnWidth(column):
                self.table.setColumnWidth(column, width)
        self._widths = widths

    def _refresh_notes(self) -> None:
        """Every row's note and colours again (the threshold or the model changed)."""
        self.rows.restyle(self.threshold.value(), self.model_name)
        self.repredict_button.setVisible(self.stale_rows() > 0)

    def low_confidence(self) -> list[Prediction]:
        return [p for p in self.predictions if p.ok and p.confidence < self.threshold.value()]

    def _show_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        index = self.rows.prediction(rows[0].row())
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
            f"<b>{html.escape(self.rows.text(index, 0))}</b>: "
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
        if rows and self.rows.prediction(rows[0].row()) == explained.row:
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
        self.rows.clear()
        self._widths = []  # narrow again
        self._fit_columns([])
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

