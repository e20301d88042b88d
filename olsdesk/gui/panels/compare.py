"""Compare: the runs in the runs folder side by side.

Select two or more runs to overlay their validation curves, see their reliability
diagrams next to each other, and read their final-epoch metrics with the best value
highlighted, per run and per loss (mean ± sd over seeds: the numbers `olsdesk compare`
writes in results.csv, from the same ``core.study`` summary). "New comparison…" runs the
study engine in the window's training worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from olsdesk.config import LOSS_LABELS, LOSS_NAMES, loss_alpha
from olsdesk.core import study
from olsdesk.core.runs import RunStore
from olsdesk.errors import RunError
from olsdesk.gui.panels.common import Canvas, NumberItem, class_color, row_table, style_plot
from olsdesk.gui.panels.reliability import ReliabilityPanel

RUN_COLUMNS = ("run", "data", "model", "loss", "α / ε", "epochs", "lr", "best top-1",
               "final ECE", "status", "notes")
MAX_RELIABILITY = 4


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run folders (holding run.json) under ``root``, newest first."""
    found = []

    def walk(folder: Path, level: int) -> None:
        try:
            entries = list(folder.iterdir())
        except OSError:
            return
        if (folder / "run.json").is_file() and (folder / "config.json").is_file():
            found.append(folder)
            return
        if level < depth:
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith("."):
                    walk(entry, level + 1)

    if root.is_dir():
        walk(root, 0)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class NewComparisonDialog(QDialog):
    """Which losses and how many seeds; everything else comes from the experiment panel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New comparison")
        form = QFormLayout(self)
        self.boxes = {}
        for loss in LOSS_NAMES:
            box = QCheckBox(LOSS_LABELS[loss])
            box.setChecked(True)
            self.boxes[loss] = box
            form.addRow("" if loss != LOSS_NAMES[0] else "Losses", box)
        self.seeds = QSpinBox()
        self.seeds.setRange(1, 10)
        self.seeds.setValue(3)
        form.addRow("Seeds", self.seeds)
        form.addRow(QLabel("Data, model, epochs and schedule: as set in the experiment panel."))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                   QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def losses(self) -> list[str]:
        return [loss for loss, box in self.boxes.items() if box.isChecked()]


class ComparePanel(QWidget):
    comparison_requested = Signal(list, int)  # losses, seeds

    def __init__(self, runs_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs_dir = Path(runs_dir)
        self.stores: list[RunStore] = []
        # run folder -> (metrics.jsonl mtime, reports): selection changes re-read nothing
        self._loaded: dict[Path, tuple[int, list]] = {}
        self.where = QLabel("")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        new = QPushButton("New comparison…")
        new.clicked.connect(self._new_comparison)
        top = QHBoxLayout()
        top.addWidget(self.where, 1)
        top.addWidget(refresh)
        top.addWidget(new)

        self.runs = row_table(RUN_COLUMNS, single=False)
        self.runs.itemSelectionChanged.connect(self._selection_changed)
        # which runs are listed: words every listed run matches in some column
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter runs: e.g. ols resnet50 radimagenet")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._apply_filter)
        self.show_empty = QCheckBox("runs without a finished epoch")
        self.show_empty.setToolTip("Runs stopped or failed before their first epoch ended: "
                                   "nothing to compare, so hidden unless asked for")
        self.show_empty.toggled.connect(self._apply_filter)
        self.shown_label = QLabel("")
        filters = QHBoxLayout()
        filters.addWidget(self.filter, 1)
        filters.addWidget(self.show_empty)
        filters.addWidget(self.shown_label)
        runs_box = QWidget()
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.setContentsMargins(0, 0, 0, 0)
        runs_layout.addLayout(filters)
        runs_layout.addWidget(self.runs, 1)
        # a run's notes, kept in its folder (notes.md); saved as they are typed
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("Notes on the selected run (kept in its folder as "
                                      "notes.md)")
        self.notes.setEnabled(False)
        self.notes.setMaximumHeight(90)
        self._notes_store: RunStore | None = None
        self._notes_timer = QTimer(self)
        self._notes_timer.setSingleShot(True)
        self._notes_timer.setInterval(600)
        self._notes_timer.timeout.connect(self.save_notes)
        self.notes.textChanged.connect(self._notes_timer.start)
        runs_layout.addWidget(self.notes)
        # the settings of the selected runs, those that differ first
        self.settings_table = QTableWidget()
        self.settings_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.settings_note = QLabel("")
        self.settings_note.setWordWrap(True)
        self.all_settings = QCheckBox("show the settings they share too")
        self.all_settings.toggled.connect(lambda: self._fill_settings(self.selected_stores()))

        self.curves = Canvas()
        self.top1_plot = self.curves.addPlot(row=0, col=0)
        style_plot(self.top1_plot, "Validation Top-1", "accuracy")
        self.top1_plot.addLegend(offset=(-10, -10))
        self.ece_plot = self.curves.addPlot(row=0, col=1)
        style_plot(self.ece_plot, "Validation ECE", "error")
        self.reliability_holder = QWidget()
        self.reliability_layout = QHBoxLayout(self.reliability_holder)
        self.reliability_panels: list[ReliabilityPanel] = []
        self.metrics = QTableWidget()
        self.metrics.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.by_loss = QTableWidget()
        self.by_loss.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        tables = QWidget()
        tables_layout = QVBoxLayout(tables)
        tables_layout.addWidget(QLabel("Final epoch, per run (best in bold green)"))
        tables_layout.addWidget(self.metrics, 1)
        tables_layout.addWidget(QLabel("Per loss, mean ± sd over the selected runs "
                                       "(as olsdesk compare's results.csv)"))
        tables_layout.addWidget(self.by_loss, 1)
        settings_box = QWidget()
        settings_layout = QVBoxLayout(settings_box)
        settings_row = QHBoxLayout()
        settings_row.addWidget(self.settings_note, 1)
        settings_row.addWidget(self.all_settings)
        settings_layout.addLayout(settings_row)
        settings_layout.addWidget(self.settings_table, 1)
        self.views = QTabWidget()
        self.views.addTab(self.curves, "Curves")
        self.views.addTab(self.reliability_holder, "Reliability")
        self.views.addTab(tables, "Metrics")
        self.views.addTab(settings_box, "Settings")
        self.hint = QLabel("Select two or more runs (Ctrl/Shift-click) to compare them.")
        # runs trained differently are compared, but never without a word
        self.caveat = QLabel("")
        self.caveat.setStyleSheet("color: #b36b00")
        self.caveat.setWordWrap(True)
        self.caveat.hide()

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(runs_box)
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.hint)
        bottom_layout.addWidget(self.caveat)
        bottom_layout.addWidget(self.views, 1)
        splitter.addWidget(bottom)
        splitter.setSizes([330, 520])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    def set_runs_dir(self, path: Path) -> None:
        self.runs_dir = Path(path)
        self.refresh()

    def refresh(self) -> None:
        """List every run under the runs folder with its key settings and numbers."""
        self.save_notes()
        self.where.setText(f"Runs in {self.runs_dir}")
        self.stores = []
        self.runs.setSortingEnabled(False)
        self.runs.setRowCount(0)
        for path in find_runs(self.runs_dir):
            try:
                store = RunStore.open(path)
                config, status, metrics = store.config(), store.status, store.metrics()
                notes = store.notes()
            except (RunError, OSError, ValueError, KeyError):
                continue
            row = self.runs.rowCount()
            self.runs.insertRow(row)
            name = QTableWidgetItem(str(path.relative_to(self.runs_dir)))
            name.setData(Qt.ItemDataRole.UserRole, len(self.stores))
            self.stores.append(store)
            best = max((m["val_top1"] for m in metrics), default=float("nan"))
            ece = metrics[-1]["ece"] if metrics else float("nan")
            cells = [name, QTableWidgetItem(Path(config.data).name or config.data),
                     QTableWidgetItem(config.model), QTableWidgetItem(config.loss),
                     QTableWidgetItem(_smoothing_text(config)),
                     NumberItem(len(metrics), f"{len(metrics)}/{config.epochs}"),
                     NumberItem(config.lr, f"{config.lr:g}"),
                     NumberItem(best, metric_text("val_top1", best)),
                     NumberItem(ece, metric_text("ece", ece)),
                     QTableWidgetItem(status),  # 'interrupted' when killed mid-run
                     QTableWidgetItem(_first_line(notes))]
            cells[-1].setToolTip(notes)
            for col, item in enumerate(cells):
                self.runs.setItem(row, col, item)
        self.runs.setSortingEnabled(True)
        self._apply_filter()

    def _apply_filter(self) -> None:
        """Hide the rows that miss a word of the filter (each word must appear in some
        column) and, unless asked for, the runs without a finished epoch."""
        words = self.filter.text().lower().split()
        empty_column = RUN_COLUMNS.index("epochs")
        shown = 0
        for row in range(self.runs.rowCount()):
            texts = [self.runs.item(row, c).text().lower()
                     for c in range(self.runs.columnCount()) if self.runs.item(row, c)]
            epochs_done = self.runs.item(row, empty_column).value > 0  # its number, not text
            visible = (epochs_done or self.show_empty.isChecked()) and all(
                any(word in text for text in texts) for word in words)
            self.runs.setRowHidden(row, not visible)
            shown += visible
        self.shown_label.setText(f"{shown} of {self.runs.rowCount()} runs")

    def listed_runs(self) -> list[str]:
        """The names of the runs the table shows now (tests)."""
        return [self.runs.item(r, 0).text() for r in range(self.runs.rowCount())
                if not self.runs.isRowHidden(r)]

    def selected_stores(self) -> list[RunStore]:
        rows = sorted({i.row() for i in self.runs.selectedIndexes()})
        return [self.stores[self.runs.item(r, 0).data(Qt.ItemDataRole.UserRole)] for r in rows]

    def select_runs(self, paths: list[Path]) -> None:
        wanted = {Path(p).resolve() for p in paths}
        self.runs.clearSelection()
        mode = self.runs.selectionMode()
        self.runs.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.runs.rowCount()):
            store = self.stores[self.runs.item(row, 0).data(Qt.ItemDataRole.UserRole)]
            if store.path.resolve() in wanted:
                self.runs.selectRow(row)
        self.runs.setSelectionMode(mode)

    def save_notes(self) -> None:
        """Write the notes being edited into their run's folder."""
        self._notes_timer.stop()
        store = self._notes_store
        if store is None:
            return
        text = self.notes.toPlainText()
        if text == store.notes():
            return
        try:
            store.write_notes(text)
        except OSError as exc:
            self.where.setText(f"The notes could not be saved in {store.path.name} ({exc}).")
            return
        for row in range(self.runs.rowCount()):
            index = self.runs.item(row, 0).data(Qt.ItemDataRole.UserRole)
            if self.stores[index] is store:
                item = self.runs.item(row, RUN_COLUMNS.index("notes"))
                item.setText(_first_line(text))
                item.setToolTip(text)

    def _show_notes(self, stores: list[RunStore]) -> None:
        self.save_notes()
        self._notes_store = stores[0] if len(stores) == 1 else None
        self.notes.blockSignals(True)
        self.notes.setPlainText(self._notes_store.notes() if self._notes_store else "")
        self.notes.blockSignals(False)
        self.notes.setEnabled(self._notes_store is not None)
        self.notes.setPlaceholderText(
            "Notes on the selected run (kept in its folder as notes.md)"
            if self._notes_store is not None or not stores else
            "Select one run to read or write its notes")

    def _fill_settings(self, stores: list[RunStore]) -> None:
        """Rows = settings, columns = runs; those that differ first and marked."""
        table = self.settings_table
        table.clear()
        if not stores:
            table.setRowCount(0)
            table.setColumnCount(0)
            self.settings_note.setText("Select runs to see their settings.")
            return
        configs = [s.config().to_dict() for s in stores]
        keys = list(configs[0])
        for config in configs[1:]:
            keys += [k for k in config if k not in keys]
        differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        same = [k for k in keys if k not in differ]
        rows = differ + (same if self.all_settings.isChecked() or len(stores) == 1 else [])
        table.setRowCount(len(rows))
        table.setColumnCount(len(stores))
        table.setHorizontalHeaderLabels([s.path.name for s in stores])
        table.setVerticalHeaderLabels(rows)
        highlight = QBrush(QColor("#fff1c2"))
        for r, key in enumerate(rows):
            for c, config in enumerate(configs):
                value = config.get(key, "—")
                item = QTableWidgetItem("—" if value is None else str(value))
                if key in differ:
                    item.setBackground(highlight)
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        if len(stores) == 1:
            self.settings_note.setText(f"Every setting of {stores[0].path.name}.")
        elif differ:
            self.settings_note.setText(f"{len(differ)} setting{'s' if len(differ) > 1 else ''}"
                                       f" differ (highlighted): {', '.join(differ)}.")
        else:
            self.settings_note.setText("The selected runs share every setting.")

    def settings_differing(self) -> list[str]:
        """The rows the settings table highlights (tests)."""
        rows = self.settings_table.rowCount()
        highlighted = []
        for r in range(rows):
            item = self.settings_table.item(r, 0)
            if item is not None and item.background().color() == QColor("#fff1c2"):
                highlighted.append(self.settings_table.verticalHeaderItem(r).text())
        return highlighted

    def _selection_changed(self) -> None:
        stores = self.selected_stores()
        self._show_notes(stores)
        self._fill_settings(stores)
        reports = {s.path.name: self._reports_of(s) for s in stores}
        reports = {k: v for k, v in reports.items() if v}
        self.reports = reports
        self._draw_curves(reports)
        self._draw_reliability(reports)
        self._fill_metrics(reports, stores)
        self.hint.setVisible(len(reports) < 2)
        differences = settings_that_differ([s for s in stores if s.path.name in reports])
        self.caveat.setText(f"⚠ These runs differ in {', '.join(differences)}: their numbers "
                            "are not a like-for-like comparison." if differences else "")
        self.caveat.setVisible(bool(differences))

    def _reports_of(self, store: RunStore) -> list:
        """A run's reports, read again only when its metrics.jsonl has changed."""
        metrics = store.path / "metrics.jsonl"
        stamp = metrics.stat().st_mtime_ns if metrics.exists() else 0
        cached = self._loaded.get(store.path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, store.load_reports())
            self._loaded[store.path] = cached
        return cached[1]

    def curve_count(self) -> int:
        """How many runs the Top-1 plot overlays."""
        return len(self.top1_plot.listDataItems())

    def _draw_curves(self, reports: dict) -> None:
        for plot in (self.top1_plot, self.ece_plot):
            plot.clear()
        self.top1_plot.legend.clear()
        for i, (name, runs) in enumerate(reports.items()):
            epochs = [r.epoch for r in runs]
            pen = pg.mkPen(class_color(i), width=2)
            self.top1_plot.plot(epochs, [r.val_top1 for r in runs], pen=pen, name=name,
                                symbol="o", symbolSize=5, symbolBrush=class_color(i))
            self.ece_plot.plot(epochs, [r.ece for r in runs], pen=pen, symbol="o",
                               symbolSize=5, symbolBrush=class_color(i))

    def _draw_reliability(self, reports: dict) -> None:
        for panel in self.reliability_panels:
            self.reliability_layout.removeWidget(panel)
            panel.deleteLater()
        self.reliability_panels = []
        for name, runs in list(reports.items())[:MAX_RELIABILITY]:
            panel = ReliabilityPanel()
            panel.diagram.setTitle(name, size="10pt")
            panel.show_report(runs[-1])
            self.reliability_layout.addWidget(panel)
            self.reliability_panels.append(panel)

    @staticmethod
    def _fill(table: QTableWidget, rows: list[str], cells: list[list[str]],
              best: list[list[bool]]) -> None:
        """Metric columns, the best of each highlighted in bold green."""
        bold = QFont()
        bold.setBold(True)
        table.clear()
        table.setRowCount(len(rows))
        table.setColumnCount(len(study.METRICS))
        table.setHorizontalHeaderLabels([label for _, label, _ in study.METRICS])
        table.setVerticalHeaderLabels(rows)
        for row, line in enumerate(cells):
            for col, text in enumerate(line):
                item = QTableWidgetItem(text)
                if best[row][col] and len(rows) > 1:
                    item.setFont(bold)
                    item.setBackground(QBrush(QColor("#d8f0d8")))
                table.setItem(row, col, item)

    def _fill_metrics(self, reports: dict, stores: list[RunStore]) -> None:
        names = list(reports)
        finals = [reports[n][-1] for n in names]
        best_run = study.best_runs(finals)
        keys = [key for key, _, _ in study.METRICS]
        self._fill(self.metrics, names,
                   [[metric_text(key, getattr(f, key)) for key in keys] for f in finals],
                   [[best_run[key] == i for key in keys] for i in range(len(finals))])
        chosen = [s for s in stores if s.path.name in reports]
        histories: study.Histories = {}
        for store in chosen:
            histories.setdefault(store.config().loss, []).append(reports[store.path.name])
        summary = study.summarise(study.finals_of(histories))
        self._fill(self.by_loss, [f"{LOSS_LABELS[r.loss]} ({r.runs})" for r in summary.rows],
                   [[metric_text(k, r.mean[k], r.std[k] if r.runs > 1 else None) for k in keys]
                    for r in summary.rows],
                   [[summary.best.get(k) == r.loss for k in keys] for r in summary.rows])

    def _new_comparison(self) -> None:
        dialog = NewComparisonDialog(self)
        if dialog.exec() and dialog.losses():
            self.comparison_requested.emit(dialog.losses(), dialog.seeds.value())


def _smoothing_text(config) -> str:
    """The loss's own knob: α for OLS and TF-KD, ε for label smoothing."""
    alpha = loss_alpha(config.loss, config.alpha)
    if alpha is not None:
        return f"α {alpha:g}"
    if config.loss == "ls":
        return f"ε {config.epsilon:g}"
    return "—"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


PERCENT = {"val_top1", "val_top5"}  # shown as percentages, as everywhere else in the app
# settings that make two runs' numbers incomparable, and how the caveat names them
COMPARABLE = (("data", "data"), ("split_csv", "split"), ("val_fraction", "split"),
              ("test_fraction", "split"), ("split_seed", "split"), ("epochs", "epochs"),
              ("model", "model"), ("image_size", "image size"))


def metric_text(key: str, value: float, sd: float | None = None) -> str:
    """A metric as the tables show it: '91.3 %' for accuracies, '0.0686' otherwise, '—'
    for no value (a run stopped before its first epoch), '± sd' only over several runs."""
    if value is None or not np.isfinite(value):
        return "—"
    text = f"{value:.1%}".replace("%", " %") if key in PERCENT else f"{value:.4f}"
    if sd is not None and np.isfinite(sd):
        text += (f" ± {sd:.1%}".replace("%", " %") if key in PERCENT else f" ± {sd:.4f}")
    return text


def settings_that_differ(stores) -> list[str]:
    """What differs between the runs' settings that their numbers depend on."""
    configs = [s.config() for s in stores]
    found: list[str] = []
    for field, label in COMPARABLE:
        if len({getattr(c, field) for c in configs}) > 1 and label not in found:
            found.append(label)
    return found
