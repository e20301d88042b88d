"""Evaluate: the chosen checkpoint on its test split, with 95 % intervals.

Runs ``core.evaluation.iter_evaluate`` in a worker (progress, cancel) on the run's held-out
test split or an external folder, then shows every metric with its interval (raw and
temperature-scaled), the per-class table (sortable) and the confusion matrix (counts or
rows normalised); Save files… writes what ``olsdesk evaluate`` writes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from olsdesk.core.bootstrap import CLASS_METRICS, SUMMARY_METRICS
from olsdesk.core.evaluation import (
    METRIC_LABELS,
    Evaluation,
    EvaluationProgress,
    format_interval,
    iter_evaluate,
    write_evaluation,
)
from olsdesk.core.state import AppState, CheckpointRef
from olsdesk.gui.panels.common import NumberItem, row_table
from olsdesk.gui.panels.errors import ErrorBrowser
from olsdesk.gui.panels.soft_labels import SoftLabelsPanel
from olsdesk.gui.widgets import DialogFolders
from olsdesk.gui.workers import Worker, start_worker

CLASS_LABELS = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV",
                "npv": "NPV", "f1": "F1", "auroc": "AUROC", "average_precision": "AP"}


class EvaluationPanel(QWidget):
    finished = Signal(str)  # "" when an evaluation is shown, else why not

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state or AppState()  # the checkpoint and its evaluation: the window's
        self._worker: Worker | None = None
        self._evaluating: CheckpointRef | None = None  # the weights the worker evaluates
        self._stop = threading.Event()
        self.folders = DialogFolders()  # where its file dialogs open (the window's)

        self.model_label = QLabel("No checkpoint yet: train a run or open one.")
        self.model_label.setWordWrap(True)
        self.run_button = QPushButton("Evaluate on the test split")
        self.run_button.setToolTip("Test images no training or model selection saw; 1,000 "
                                   "bootstrap resamples for the 95 % intervals")
        self.run_button.clicked.connect(lambda: self.evaluate())
        external = QPushButton("External test folder…")
        external.setToolTip("Another hospital's images in class folders named as the run's")
        external.clicked.connect(self.choose_external)
        self.save_button = QPushButton("Save files…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.choose_save)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.hide()
        top = QHBoxLayout()
        top.addWidget(self.model_label, 1)
        for widget in (self.run_button, external, self.save_button, self.progress,
                       self.cancel_button):
            top.addWidget(widget)
        self.status = QLabel(" ")
        self.status.setWordWrap(True)

        self.metrics = QTableWidget(len(SUMMARY_METRICS), 2)
        self.metrics.setHorizontalHeaderLabels(["raw", "temperature-scaled"])
        self.metrics.setVerticalHeaderLabels([METRIC_LABELS[m] for m in SUMMARY_METRICS])
        self.metrics.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.metrics.horizontalHeader().setStretchLastSection(True)
        self.per_class = row_table(["class", "images"] + [CLASS_LABELS[m] for m in CLASS_METRICS],
                                   single=True)
        self.confusion = SoftLabelsPanel()
        self.confusion.hide_controls()
        self.confusion.plot.setLabel("bottom", "predicted class")  # from the start
        self.confusion_choice = QComboBox()
        self.confusion_choice.addItem("rows normalised", "rates")
        self.confusion_choice.addItem("counts", "counts")
        self.confusion_choice.currentIndexChanged.connect(self._draw_confusion)
        confusion_box = QWidget()
        confusion_layout = QVBoxLayout(confusion_box)
        confusion_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Confusion matrix:"))
        row.addWidget(self.confusion_choice)
        row.addStretch(1)
        confusion_layout.addLayout(row)
        confusion_layout.addWidget(self.confusion, 1)

        # the images behind a cell, a class or a reliability bin
        self.browser = ErrorBrowser(self.state)
        self.confusion.cell_clicked.connect(self.browser.show_cell)
        self.confusion.setToolTip("Click a cell to see its test images below")
        self.per_class.cellClicked.connect(self._class_clicked)
        self.per_class.setToolTip("Click a class to see its misclassified test images below")

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.metrics)
        left.addWidget(self.per_class)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(confusion_box)
        splitter.setSizes([620, 520])
        whole = QSplitter(Qt.Orientation.Vertical)
        whole.addWidget(splitter)
        whole.addWidget(self.browser)
        whole.setSizes([470, 330])
        whole.setStretchFactor(0, 3)  # a short window keeps the numbers and the matrix
        whole.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(whole, 1)
        self.state.events.checkpoint.connect(self._checkpoint_changed)
        self.state.events.evaluation.connect(self._evaluation_changed)

    # --- which checkpoint ------------------------------------------------------------
    @property
    def checkpoint(self) -> str | None:
        ref = self.state.checkpoint
        return ref.path if ref is not None else None

    @property
    def evaluation(self) -> Evaluation | None:
        """The evaluation shown: always of the checkpoint in use (AppState's rule)."""
        return self.state.evaluation

    def set_checkpoint(self, path: str | Path, note: str = "") -> None:
        self.state.set_checkpoint(CheckpointRef(str(path), note=note))

    def _checkpoint_changed(self, ref: CheckpointRef | None) -> None:
        self.model_label.setText(f"Checkpoint: {ref.name}" if ref is not None else
                                 "No checkpoint yet: train a run or open one.")
        if self.evaluation is None and not self.busy:
            self._say_not_evaluated()

    def _say_not_evaluated(self) -> None:
        ref = self.state.checkpoint
        self.status.setText(f"{ref.name} is not evaluated yet." if ref is not None else " ")

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # --- running ---------------------------------------------------------------------
    def evaluate(self, test_data: str | None = None, resamples: int = 1000) -> None:
        """Evaluate the checkpoint in the worker (the run's test split, or ``test_data``)."""
        if self.checkpoint is None:
            self.status.setText("No checkpoint to evaluate yet: train a run or open one.")
            return
        if self.busy:
            return
        self._stop.clear()
        self._evaluating = self.state.checkpoint
        self.run_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.status.setText("Predicting the test images…")
        self._worker = start_worker(
            _evaluate, self.checkpoint, test_data, resamples, self._stop,
            yielded=self._arrived, errored=self._failed, finished=self._worker_finished,
            throttle=lambda item: isinstance(item, EvaluationProgress)
            and item.phase == "predict" and item.done != item.total,
            stop=self._stop.set)

    def choose_external(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "External test folder (class folders)",
                                                  self.folders.start("data"))
        if folder:
            self.folders.remember("data", folder)
            self.evaluate(test_data=folder)

    def cancel(self) -> None:
        self._stop.set()

    def _arrived(self, item) -> None:
        if isinstance(item, EvaluationProgress):
            if item.phase == "bootstrap":
                self.progress.setRange(0, 0)
                self.status.setText(f"{item.total} test images predicted; bootstrapping the "
                                    "intervals…")
            else:
                self.progress.setRange(0, max(item.total, 1))
                self.progress.setValue(item.done)
            return
        if not self.state.set_evaluation(item, of=self._evaluating):
            now = self.state.checkpoint
            self.status.setText(
                f"The evaluation of {self._evaluating.name if self._evaluating else 'a model'}"
                f" is not shown: the checkpoint in use is now "
                f"{now.name if now is not None else 'none'}. Evaluate again.")
            self.finished.emit("the checkpoint changed during the evaluation")

    def _failed(self, message: str) -> None:
        self.status.setText(message)
        self.finished.emit(message)

    def _worker_finished(self) -> None:
        self._worker = None
        self.progress.hide()
        self.cancel_button.hide()
        self.run_button.setEnabled(True)
        if self._stop.is_set():
            kept = (f" The evaluation shown is still that of {self.state.checkpoint.name}."
                    if self.evaluation is not None else "")
            self.status.setText("Evaluation cancelled." + kept)
            self.finished.emit("cancelled")

    # --- showing -----------------------------------------------------------------------
    def _evaluation_changed(self, ev: Evaluation | None) -> None:
        if ev is None:
            self._clear()
        else:
            self._show(ev)

    def _clear(self) -> None:
        """No evaluation of the checkpoint in use: nothing of another model stays shown."""
        self.metrics.clearContents()
        self.per_class.setRowCount(0)
        self.confusion.clear_matrix()
        self.browser.set_evaluation(None)
        self.save_button.setEnabled(False)
        if not self.busy:
            self._say_not_evaluated()

    def _show(self, ev: Evaluation) -> None:
        for row, metric in enumerate(SUMMARY_METRICS):
            for col, result in enumerate((ev.raw, ev.scaled)):
                item = QTableWidgetItem(format_interval(result.value[metric],
                                                        result.interval(metric)))
                self.metrics.setItem(row, col, item)
        self.metrics.resizeColumnsToContents()
        support = np.bincount(ev.labels, minlength=len(ev.class_names))
        intervals = {m: ev.raw.class_intervals(m) for m in CLASS_METRICS}
        self.per_class.setSortingEnabled(False)
        self.per_class.setRowCount(len(ev.class_names))
        for c, name in enumerate(ev.class_names):
            # the class column sorts by class number, so row n is the matrix's class n;
            # the row keeps its class however the table is sorted
            name_item = NumberItem(c, name)
            name_item.setData(Qt.ItemDataRole.UserRole, c)
            self.per_class.setItem(c, 0, name_item)
            self.per_class.setItem(c, 1, NumberItem(int(support[c]), str(int(support[c]))))
            for col, metric in enumerate(CLASS_METRICS, start=2):
                value = float(ev.raw.class_value[metric][c])
                self.per_class.setItem(c, col, NumberItem(
                    value, format_interval(value, intervals[metric][c])))
        self.per_class.setSortingEnabled(True)
        self.per_class.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # the matrix's order
        self.per_class.resizeColumnsToContents()
        self.confusion.set_classes(ev.class_names)
        self._draw_confusion()
        self.browser.set_evaluation(ev)
        warnings = "".join(f" ⚠ {w}" for w in ev.warnings)
        self.status.setText(
            f"{len(ev.labels)} test images ({ev.source}), {len(ev.unreadable)} unreadable; "
            f"T = {ev.temperature:.3f} from validation; 95 % intervals from {ev.resamples} "
            f"bootstrap resamples of the images.{warnings}")
        self.save_button.setEnabled(True)
        self.finished.emit("")

    def _draw_confusion(self) -> None:
        ev = self.evaluation
        if ev is None:
            return
        counts = ev.confusion()
        if self.confusion_choice.currentData() == "counts":
            top = max(int(counts.max()), 1)
            self.confusion.show_matrix(counts / top, f"{len(ev.labels)} test images, counts",
                                       "predicted class", f"count / {top}", values=counts,
                                       value_format="{:d}")
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                rates = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
            self.confusion.show_matrix(rates, f"{len(ev.labels)} test images, rows sum to 1",
                                       "predicted class", "share of the row", values=rates)

    def _class_clicked(self, row: int, _column: int) -> None:
        item = self.per_class.item(row, 0)
        if item is not None:
            self.browser.show_class_mistakes(item.data(Qt.ItemDataRole.UserRole))

    def shown_confusion(self) -> np.ndarray | None:
        return self.confusion.shown_matrix()

    # --- files -------------------------------------------------------------------------
    def choose_save(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the evaluation to a folder",
                                                  self.folders.start("evaluation"))
        if folder:
            self.folders.remember("evaluation", folder)
            self.save(folder)

    def save(self, folder: str | Path) -> list[Path]:
        from olsdesk.gui.figures import write_evaluation_figures

        written = write_evaluation(self.evaluation, folder, write_evaluation_figures)
        self.status.setText(f"Wrote {', '.join(p.name for p in written)} to {folder}.")
        return written


def _evaluate(checkpoint: str, test_data: str | None, resamples: int, stop: threading.Event):
    """Off the GUI thread: progress, then the Evaluation (nothing when stopped)."""
    yield from iter_evaluate(checkpoint, test_data=test_data, resamples=resamples, stop=stop)
