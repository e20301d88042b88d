"""Evaluate: the chosen checkpoint on its test split, with 95 % intervals.

Runs ``core.evaluation.iter_evaluate`` in a worker (progress, cancel) on the run's held-out
test split or an external folder (and, with "Unfamiliar folder…", a folder of images unlike
the training data), then shows every metric with its interval (raw beside a recalibrator
chosen from those fitted on validation), the recalibrators compared, the risk-coverage
curves (after a comparison run in the window, also one a loss), the unfamiliar-input
scores, the per-class table with each class's set coverage and size (sortable), the
confusion matrix (counts or rows normalised) and its most confused pairs as a list; Save
files… writes what ``olsdesk evaluate`` writes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyqtgraph as pg
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
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from olsdesk.config import RECALIBRATOR_LABELS
from olsdesk.core.bootstrap import CLASS_METRICS, SUMMARY_METRICS
from olsdesk.core.conformal import class_coverage
from olsdesk.core.evaluation import (
    FREQUENCY_GROUPS,
    METRIC_LABELS,
    RECALIBRATION_METRICS,
    SCORES,
    Evaluation,
    EvaluationProgress,
    format_interval,
    iter_evaluate,
    write_evaluation,
)
from olsdesk.core.names import pair_name
from olsdesk.core.outputs import StagedFolder
from olsdesk.core.state import AppState, CheckpointRef
from olsdesk.core.study import arm_label
from olsdesk.errors import OlsdeskError
from olsdesk.gui.panels.common import (
    Canvas,
    NumberItem,
    class_color,
    plural,
    row_table,
    style_plot,
)
from olsdesk.gui.panels.errors import ErrorBrowser
from olsdesk.gui.panels.soft_labels import SoftLabelsPanel
from olsdesk.gui.widgets import DialogFolders
from olsdesk.gui.workers import Worker, start_worker

CLASS_LABELS = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV",
                "npv": "NPV", "f1": "F1", "auroc": "AUROC", "average_precision": "AP"}
SET_COLUMNS = ("set coverage", "set size")  # per class, from the conformal sets
TOP_CONFUSIONS = 100  # rows of the most-confused list; top_confusions.csv holds every pair
# short number headers, so that the pair's names keep the room (a header's tooltip says
# it whole): at 1400 x 900 the longer ones left "MR/brain: ..." of each pair
CONFUSION_COLUMNS = {"true → predicted": "the true class → the class predicted instead",
                     "images": "test images of the true class predicted as the other",
                     "of class": "their share of the true class's test images",
                     "of errors": "their share of all misclassified test images"}
CURVE_COLOURS = {"raw": "#0072B2", "temperature_scaled": "#D55E00",
                 "negative_entropy": "#009E73", "max_logit": "#CC79A7"}


class EvaluationPanel(QWidget):
    finished = Signal(str)  # "" when an evaluation is shown, else why not

    def __init__(self, state: AppState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state or AppState()  # the checkpoint and its evaluation: the window's
        self._worker: Worker | None = None
        self._saving: Worker | None = None  # Save files…, writing in a worker
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
        unfamiliar = QPushButton("Unfamiliar folder…")
        unfamiliar.setToolTip("Images unlike the training data (another modality, another "
                              "body part): how well the unfamiliar-input score tells them "
                              "from the test images")
        unfamiliar.clicked.connect(self.choose_unfamiliar)
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
        for widget in (self.run_button, external, unfamiliar, self.save_button, self.progress,
                       self.cancel_button):
            top.addWidget(widget)
        self.status = QLabel(" ")
        self.status.setWordWrap(True)

        self.metrics = QTableWidget(len(SUMMARY_METRICS), 2)
        self.metrics.setHorizontalHeaderLabels(["raw", "temperature scaling"])
        self.metrics.setVerticalHeaderLabels([METRIC_LABELS[m] for m in SUMMARY_METRICS])
        self.metrics.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.metrics.horizontalHeader().setStretchLastSection(True)
        # the second column: any recalibrator the checkpoint holds, fitted on validation
        self.recalibrator = QComboBox()
        self.recalibrator.setToolTip("The recalibrator beside the raw numbers; each was "
                                     "fitted on the validation split, never on these images")
        self.recalibrator.currentIndexChanged.connect(self._draw_metrics)
        metrics_box = _under_a_choice("Beside raw:", self.recalibrator, self.metrics)
        # the recalibrators side by side on the calibration numbers
        self.compared = QTableWidget(len(RECALIBRATION_METRICS), 0)
        self.compared.setVerticalHeaderLabels([METRIC_LABELS[m] for m in RECALIBRATION_METRICS])
        self.compared.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.compared.setToolTip("Each recalibrator fitted on validation, scored on these "
                                 "test images on the same bootstrap resamples")
        # selective prediction: the error rate among the most confident answers
        self.risk_canvas = Canvas()
        self.risk_plot = self.risk_canvas.addPlot()
        style_plot(self.risk_plot, "Risk-coverage (test)", "error rate among the answered",
                   "coverage (share of images answered, most confident first)")
        self.risk_plot.addLegend(offset=(10, 10))  # top left: the curves start low there
        self.risk_plot.setXRange(0, 1, padding=0.02)
        self.risk_plot.setMouseEnabled(False, False)
        # whose curves: this checkpoint's scores, or a finished comparison's losses
        self.risk_source = QComboBox()
        self.risk_source.addItem("this checkpoint, one curve a score", "checkpoint")
        self.risk_source.setToolTip("A comparison run in this window adds its losses: each "
                                    "loss's curve is the mean over its seeds of the raw "
                                    "top-1 probability's, on the same test images")
        self.risk_source.currentIndexChanged.connect(self._draw_risk)
        self.comparison = None  # study.TestComparison of the last comparison, if any
        risk_box = _under_a_choice("Curves of:", self.risk_source, self.risk_canvas)
        # unfamiliar inputs: the score of the test images (and of an unfamiliar folder)
        self.ood_canvas = Canvas()
        self.ood_plot = self.ood_canvas.addPlot()
        style_plot(self.ood_plot, "Unfamiliar-input score", "share of images",
                   "familiarity (higher: more like the training data; log scale)")
        self.ood_plot.addLegend(offset=(10, 10))
        self.ood_plot.setMouseEnabled(False, False)
        # head / medium / tail classes by training images, beside balanced accuracy
        self.frequency = QTableWidget(len(FREQUENCY_GROUPS), len(FREQUENCY_COLUMNS))
        self.frequency.setHorizontalHeaderLabels(list(FREQUENCY_COLUMNS))
        self.frequency.setVerticalHeaderLabels(list(FREQUENCY_GROUPS))
        self.frequency.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.frequency_note, frequency_box = _under_a_note(self.frequency)
        self.views = QTabWidget()
        self.views.addTab(metrics_box, "Metrics")
        self.views.addTab(self.compared, "Recalibrators")
        self.views.addTab(risk_box, "Risk–coverage")
        self.views.addTab(self.ood_canvas, "Unfamiliar inputs")
        self.views.addTab(frequency_box, "Head / tail")
        self.per_class = row_table(["class", "images"] + [CLASS_LABELS[m] for m in CLASS_METRICS]
                                   + list(SET_COLUMNS), single=True)
        self.confusion = SoftLabelsPanel()
        self.confusion.hide_controls()
        self.confusion.plot.setLabel("bottom", "predicted class")  # from the start
        self.confusion_choice = QComboBox()
        self.confusion_choice.addItem("rows normalised", "rates")
        self.confusion_choice.addItem("counts", "counts")
        self.confusion_choice.currentIndexChanged.connect(self._draw_confusion)
        confusion_box = _under_a_choice("Confusion matrix:", self.confusion_choice,
                                        self.confusion)
        # the matrix's largest errors as a list: with 165 classes a cell is under 2 px
        self.top_confusions = row_table(CONFUSION_COLUMNS, single=True)
        for column, tip in enumerate(CONFUSION_COLUMNS.values()):
            self.top_confusions.horizontalHeaderItem(column).setToolTip(tip)
        self.top_confusions.cellClicked.connect(self._confusion_clicked)
        self.top_confusions.setToolTip("Click a pair to see its test images below")
        self.top_confusions.verticalHeader().setDefaultSectionSize(
            self.top_confusions.fontMetrics().height() + 6)  # more pairs in its room
        self.top_note, confused_box = _under_a_note(self.top_confusions)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(confusion_box)
        right.addWidget(confused_box)
        right.setSizes([300, 170])

        # the images behind a cell, a class or a reliability bin
        self.browser = ErrorBrowser(self.state)
        self.confusion.cell_clicked.connect(self.browser.show_cell)
        self.confusion.setToolTip("Click a cell to see its test images below; scroll to zoom, "
                                  "drag to pan, double-click for the whole matrix")
        self.per_class.cellClicked.connect(self._class_clicked)
        self.per_class.setToolTip("Click a class to see its misclassified test images below")

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.views)
        left.addWidget(self.per_class)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
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
        self.state.events.selection.connect(self._mark_confusion)

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
        if ref is not None:  # a run of a scored study: offer the study's curves (files read
            start_worker(_study_of, ref.path, returned=self._study_found)  # off this thread)

    def _study_found(self, found) -> None:
        path, folder, comparison = found
        if comparison is not None and path == self.checkpoint:
            self.show_comparison(comparison, f"its study ({folder.name})", select=False)

    def _say_not_evaluated(self) -> None:
        ref = self.state.checkpoint
        self.status.setText(f"{ref.name} is not evaluated yet." if ref is not None else " ")

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # --- running ---------------------------------------------------------------------
    def evaluate(self, test_data: str | None = None, resamples: int = 1000,
                 ood_data: str | None = None) -> None:
        """Evaluate the checkpoint in the worker (the run's test split, or ``test_data``;
        with ``ood_data``, also a folder of images unlike the training data)."""
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
            _evaluate, self.checkpoint, test_data, resamples, ood_data, self._stop,
            yielded=self._arrived, errored=self._failed, finished=self._worker_finished,
            throttle=lambda item: isinstance(item, EvaluationProgress)
            and item.phase in ("predict", "ood") and item.done != item.total,
            stop=self._stop.set)

    def choose_external(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "External test folder (class folders)",
                                                  self.folders.start("data"))
        if folder:
            self.folders.remember("data", folder)
            self.evaluate(test_data=folder)

    def choose_unfamiliar(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Images unlike the training data",
                                                  self.folders.start("data"))
        if folder:
            self.folders.remember("data", folder)
            self.evaluate(ood_data=folder)

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
        self.compared.setColumnCount(0)
        self.recalibrator.clear()
        self._draw_risk()
        self.ood_plot.clear()
        self._fill_frequency(None)
        self.per_class.setRowCount(0)
        self.confusion.clear_matrix()
        self._fill_top_confusions(None)
        self.browser.set_evaluation(None)
        self.save_button.setEnabled(False)
        if not self.busy:
            self._say_not_evaluated()

    def _show(self, ev: Evaluation) -> None:
        results = ev.results()
        self.recalibrator.blockSignals(True)
        self.recalibrator.clear()
        for name in results:
            if name != "none":
                self.recalibrator.addItem(RECALIBRATOR_LABELS[name], name)
        self.recalibrator.setCurrentIndex(max(self.recalibrator.findData(ev.recalibration), 0))
        self.recalibrator.blockSignals(False)
        self._draw_metrics()
        self.compared.setColumnCount(len(results))
        self.compared.setHorizontalHeaderLabels([RECALIBRATOR_LABELS[n] for n in results])
        for col, result in enumerate(results.values()):
            for row, metric in enumerate(RECALIBRATION_METRICS):
                self.compared.setItem(row, col, QTableWidgetItem(format_interval(
                    result.value[metric], result.interval(metric))))
        self.compared.resizeColumnsToContents()
        self._draw_risk()
        self._draw_familiarity(ev)
        self._fill_frequency(ev)
        support = np.bincount(ev.labels, minlength=len(ev.class_names))
        k = len(ev.class_names)
        coverage, size = (class_coverage(ev.prediction_sets, ev.labels, k)
                          if ev.prediction_sets is not None else ([np.nan] * k,) * 2)
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
            col = 2 + len(CLASS_METRICS)
            for offset, value, text in ((0, coverage[c], "{:.1%}"), (1, size[c], "{:.2f}")):
                self.per_class.setItem(c, col + offset, NumberItem(
                    value, text.format(value) if np.isfinite(value) else "n/a"))
        self.per_class.setSortingEnabled(True)
        self.per_class.sortByColumn(0, Qt.SortOrder.AscendingOrder)  # the matrix's order
        self.per_class.resizeColumnsToContents()
        self.confusion.set_classes(ev.class_names)
        self._draw_confusion()
        self._fill_top_confusions(ev)
        self.browser.set_evaluation(ev)
        warnings = "".join(f" ⚠ {w}" for w in ev.warnings)
        self.status.setText(
            f"{len(ev.labels)} test images ({ev.source}), {len(ev.unreadable)} unreadable; "
            f"T = {ev.temperature:.3f} from validation; 95 % intervals from {ev.resamples} "
            f"bootstrap resamples of the images.{warnings}")
        self.save_button.setEnabled(True)
        self.finished.emit("")

    def _fill_frequency(self, ev: Evaluation | None) -> None:
        """The head / medium / tail table (metrics.json's ``frequency``, computed by
        ``Evaluation.prepare`` in the worker)."""
        found = ev.frequency if ev is not None else None
        self.frequency.clearContents()
        if found is None:
            self.frequency_note.setText("" if ev is None else
                                        "The checkpoint has no run.json beside it, so the "
                                        "classes' training images are not known.")
            return
        balanced = ev.raw.value["balanced_accuracy"]
        if found["equal_classes"]:
            each = found["groups"]["head"]["train_images"][0]
            split = (f"Every class has {each:,} training images, so there is no head or "
                     "tail: the thirds below follow the class order.")
        else:
            split = (f"Classes in thirds by training images (most first); the largest "
                     f"class has {found['imbalance_ratio']:.1f}× the images of the "
                     "smallest.")
        self.frequency_note.setText(
            f"{split} Balanced accuracy over all classes: {balanced:.3f}.")
        for row, name in enumerate(FREQUENCY_GROUPS):
            group = found["groups"][name]
            low, high = group["train_images"]
            cells = [str(group["classes"]), f"{low:,}–{high:,}", str(group["test_images"])]
            cells += [f"{group[k]:.3f}" if k in group else "—"
                      for k in ("accuracy", "balanced_accuracy", "ece", "ece_scaled")]
            for col, text in enumerate(cells):
                self.frequency.setItem(row, col, QTableWidgetItem(text))
        self.frequency.resizeColumnsToContents()

    def _draw_metrics(self) -> None:
        """The metrics table: raw, and the recalibrator chosen above it."""
        ev = self.evaluation
        name = self.recalibrator.currentData()
        if ev is None or name is None:
            return
        chosen = ev.results()[name]
        self.metrics.setHorizontalHeaderLabels(["raw", RECALIBRATOR_LABELS[name]])
        for row, metric in enumerate(SUMMARY_METRICS):
            for col, result in enumerate((ev.raw, chosen)):
                value = result.value[metric]
                text = (format_interval(value, result.interval(metric)) if np.isfinite(value)
                        else "not computed" if metric == "macro_auroc" else "n/a")
                self.metrics.setItem(row, col, QTableWidgetItem(text))
        self.metrics.resizeColumnsToContents()

    def show_comparison(self, comparison, where: str = "the comparison just run",
                        select: bool = True) -> None:
        """Offer a comparison's risk-coverage curves (a ``study.TestComparison``), one a
        loss, named by ``where``, and (with ``select``) show them."""
        if comparison is None or not comparison.curves:
            return
        self.comparison = comparison
        label = f"{where}, one curve a loss"
        index = self.risk_source.findData("comparison")
        if index < 0:
            self.risk_source.addItem(label, "comparison")
        else:
            self.risk_source.setItemText(index, label)
        if select:
            self.risk_source.setCurrentIndex(self.risk_source.findData("comparison"))
        self._draw_risk()

    def _draw_risk(self) -> None:
        if self.risk_source.currentData() == "comparison":
            draw_comparison_risk_coverage(self.risk_plot, self.comparison)
        elif self.evaluation is not None:
            draw_risk_coverage(self.risk_plot, self.evaluation)
        else:
            self.risk_plot.clear()

    def _draw_familiarity(self, ev: Evaluation) -> None:
        draw_familiarity(self.ood_plot, ev)

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

    def _fill_top_confusions(self, ev: Evaluation | None) -> None:
        """The TOP_CONFUSIONS largest off-diagonal cells, their shared levels said once
        (``pair_name``), the full names on hover; sorted by rank until a header is
        clicked."""
        table = self.top_confusions
        table.setSortingEnabled(False)
        table.setRowCount(0)
        if ev is None:
            self.top_note.setText("")
            return
        confused = ev.top_confusions()
        shown = confused[:TOP_CONFUSIONS]
        names = ev.class_names
        table.setRowCount(len(shown))
        for row, c in enumerate(shown):
            pair = NumberItem(row, pair_name(names[c.true], names[c.predicted]))
            pair.setData(Qt.ItemDataRole.UserRole, c.true)
            pair.setData(Qt.ItemDataRole.UserRole + 1, c.predicted)
            pair.setToolTip(f"{names[c.true]} → {names[c.predicted]}")
            table.setItem(row, 0, pair)
            table.setItem(row, 1, NumberItem(c.count, str(c.count)))
            table.setItem(row, 2, NumberItem(c.share_of_true, f"{c.share_of_true:.1%}"))
            table.setItem(row, 3, NumberItem(c.share_of_errors, f"{c.share_of_errors:.1%}"))
        table.setSortingEnabled(True)
        table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        table.resizeColumnsToContents()
        errors = sum(c.count for c in confused)
        if not confused:
            self.top_note.setText("Most confused: no test image was misclassified.")
        else:
            covered = sum(c.count for c in shown)
            more = (f"the {len(shown)} largest of {len(confused)} pairs" if len(shown) < len(confused)
                    else f"all {plural(len(confused), 'pair')}")
            self.top_note.setText(f"Most confused (true → predicted): {more}, "
                                  f"{covered / errors:.0%} of the {plural(errors, 'error')}.")

    def _confusion_clicked(self, row: int, _column: int) -> None:
        item = self.top_confusions.item(row, 0)
        if item is not None:
            self.browser.show_cell(item.data(Qt.ItemDataRole.UserRole),
                                   item.data(Qt.ItemDataRole.UserRole + 1))

    def _mark_confusion(self, selection) -> None:
        """The list's row of the confusion cell picked (here or in the matrix), if listed."""
        table = self.top_confusions
        for row in range(table.rowCount()):
            item = table.item(row, 0)
            if (item.data(Qt.ItemDataRole.UserRole),
                    item.data(Qt.ItemDataRole.UserRole + 1)) == selection.cell:
                if table.currentRow() != row:
                    table.selectRow(row)
                return
        table.clearSelection()

    def _class_clicked(self, row: int, _column: int) -> None:
        item = self.per_class.item(row, 0)
        if item is not None:
            self.browser.show_class_mistakes(item.data(Qt.ItemDataRole.UserRole))

    def shown_confusion(self) -> np.ndarray | None:
        return self.confusion.shown_matrix()

    # --- files -------------------------------------------------------------------------
    def choose_save(self) -> None:
        if self._saving is not None:
            self.status.setText("Still saving the evaluation; wait for it to finish.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Save the evaluation to a folder",
                                                  self.folders.start("evaluation"))
        if folder:
            self.folders.remember("evaluation", folder)
            self.start_save(folder)

    def _staged_save(self, folder: str | Path):
        """The figures drawn into a staging folder beside ``folder`` (Qt: here, on the
        GUI thread; a fraction of a second) and the rest of the files as a function of
        that folder, which a worker can run: (StagedFolder, write)."""
        from olsdesk.gui.figures import write_evaluation_figures

        ev = self.evaluation
        staged = StagedFolder(folder)
        try:
            figures = [staged.staging / n for n in write_evaluation_figures(ev, staged.staging)]
        except BaseException:
            staged.discard()
            raise
        return staged, lambda out: write_evaluation(ev, out) + figures

    def start_save(self, folder: str | Path) -> Worker | None:
        """Save files…: the tables (predictions.csv is the big one: seconds at 100,000
        images) written in a worker, the window responsive; the status says when done."""
        try:
            staged, write = self._staged_save(folder)
        except (OlsdeskError, OSError) as exc:
            self.status.setText(str(exc) if isinstance(exc, OlsdeskError) else
                                f"the figures could not be drawn ({exc}).")
            return None
        self.save_button.setEnabled(False)
        self.status.setText(f"Saving the evaluation to {folder}…")
        self._saving = start_worker(
            staged.finish, write, returned=lambda written: self._saved(written, folder),
            errored=self.status.setText, finished=self._save_finished)
        return self._saving

    def _saved(self, written: list[Path], folder) -> None:
        self.status.setText(f"Wrote {', '.join(p.name for p in written)} to {folder}.")

    def _save_finished(self) -> None:
        self._saving = None
        self.save_button.setEnabled(self.evaluation is not None)

    def save(self, folder: str | Path) -> list[Path]:
        """What Save files… writes, here and now (the CLI's and the tests' way)."""
        try:
            staged, write = self._staged_save(folder)
            written = staged.finish(write)
        except OlsdeskError as exc:  # a full disk: nothing half-written, one sentence
            self.status.setText(str(exc))
            return []
        self._saved(written, folder)
        return written


def _evaluate(checkpoint: str, test_data: str | None, resamples: int, ood_data: str | None,
              stop: threading.Event):
    """Off the GUI thread: progress, then the Evaluation (nothing when stopped), with
    everything the tab draws computed here."""
    for item in iter_evaluate(checkpoint, test_data=test_data, resamples=resamples,
                              ood_data=ood_data, stop=stop):
        if isinstance(item, Evaluation):
            item.prepare()
        yield item


FREQUENCY_COLUMNS = ("classes", "train images", "test", "accuracy", "balanced", "ECE",
                     "ECE after T")


def _study_of(checkpoint: str):
    """(checkpoint, its scored study's folder and comparison, or Nones): read in a worker."""
    from olsdesk.core.study import read_test_comparison, study_folder_of

    folder = study_folder_of(checkpoint)
    return checkpoint, folder, None if folder is None else read_test_comparison(folder)


def _under_a_note(widget: QWidget) -> tuple[QLabel, QWidget]:
    """(a wrapped note, ``widget`` under it in a box of their own)."""
    note = QLabel("")
    note.setWordWrap(True)
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(note)
    layout.addWidget(widget, 1)
    return note, box


def _under_a_choice(label: str, choice: QComboBox, widget: QWidget) -> QWidget:
    """``widget`` with a labelled choice in a row above it."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    row = QHBoxLayout()
    row.addWidget(QLabel(label))
    row.addWidget(choice)
    row.addStretch(1)
    layout.addLayout(row)
    layout.addWidget(widget, 1)
    return box


def draw_risk_coverage(plot: pg.PlotItem, ev: Evaluation) -> None:
    """One curve a confidence score: the error rate among the k most confident test
    images at coverage k / N (the curves of risk_coverage.csv)."""
    plot.clear()
    for name, (coverage, risk) in ev.risk_coverage().items():
        aurc = ev.selective[name].aurc(np.ones((len(ev.labels), 1)))[0][0]
        plot.plot(coverage, risk, pen=pg.mkPen(CURVE_COLOURS[name], width=2),
                  name=f"{SCORES[name]} (AURC {aurc:.4f})")


def draw_comparison_risk_coverage(plot: pg.PlotItem, comparison) -> None:
    """One curve a loss of a comparison (``study.TestComparison``): the mean over its seeds
    of the error rate among the k most confident test images (raw top-1 probability)."""
    plot.clear()
    for i, (loss, (coverage, risk)) in enumerate(comparison.curves.items()):
        value, lo, hi = comparison.values[loss]["aurc"]
        plot.plot(coverage, risk, pen=pg.mkPen(class_color(i), width=2),
                  name=f"{arm_label(loss)} (AURC {value:.4f}, {lo:.4f}–{hi:.4f})")


def draw_familiarity(plot: pg.PlotItem, ev: Evaluation) -> None:
    """Histograms of the test images' familiarity (and an unfamiliar folder's), with the
    threshold below which a prediction is marked."""
    plot.clear()
    if ev.familiarity is None:
        plot.setTitle("Unfamiliar-input score: the checkpoint holds no detector (saved "
                      "before olsdesk kept one)", size="10pt")
        return
    groups = [("test images", ev.familiarity, "#0072B2")]
    if ev.ood_scores is not None:
        groups.append((Path(ev.ood_folder).name, ev.ood_scores, "#D55E00"))
    # a symmetric log axis: an unfamiliar folder's scores can lie thousands of units below
    # the test images', which a linear axis would squeeze into one bin
    values = symlog(np.concatenate([g[1] for g in groups]))
    values = values[np.isfinite(values)]
    edges = (np.linspace(values.min(), values.max(), 41) if values.size and
             values.max() > values.min() else np.linspace(-1.0, 1.0, 41))
    for label, scores, colour in groups:
        counts, _ = np.histogram(symlog(scores[np.isfinite(scores)]), bins=edges)
        plot.plot(edges, counts / max(len(scores), 1), stepMode="center", fillLevel=0,
                  brush=pg.mkBrush(colour + "60"), pen=pg.mkPen(colour), name=label)
    plot.addItem(pg.InfiniteLine(symlog(ev.detector.threshold), angle=90, pen=pg.mkPen(
        "#444", width=1.5, style=Qt.PenStyle.DashLine), label="threshold",
        labelOpts={"position": 0.9, "color": "#444", "anchors": [(1, 0), (1, 0)]}))
    span = np.abs([edges[0], edges[-1]]).max()
    decades = [0.0] + [s * 10.0**d for d in range(int(np.ceil(span)) + 1) for s in (1, -1)]
    plot.getAxis("bottom").setTicks([[(float(symlog(v)), f"{v:g}") for v in decades
                                      if edges[0] <= symlog(v) <= edges[-1]]])
    ood = ev.ood_dict()
    title = f"{ood['method']}: {ood['test_unfamiliar']:.1%} of test images marked"
    if "auroc" in ood:
        title += (f"<br>{ood['folder_unfamiliar']:.1%} of {Path(ev.ood_folder).name}, "
                  f"AUROC {ood['auroc']:.3f}")
    plot.setTitle(title, size="10pt")


def symlog(x):
    """sign(x) log10(1 + |x|): the familiarity histogram's axis (ticks at real values)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log10(1.0 + np.abs(x))
