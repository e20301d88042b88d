"""Compare: the runs in the runs folder side by side.

Select two or more runs to overlay their validation curves, see their reliability
diagrams next to each other, and read their final-epoch metrics with the best value
highlighted, per run and per loss (mean ± sd over seeds: the numbers `olsdesk compare`
writes in results.csv, from the same ``core.study`` summary). "New comparison…" runs the
study engine in the window's training worker.

The runs are listed, and the selected runs' epochs read, in workers (``core.runs``'s
``list_runs`` and ``RunReader``: each run's epochs once, then only those it gains), so
neither showing the tab nor selecting runs reads a run folder on the GUI thread.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer, Signal
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
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from olsdesk.config import LOSS_LABELS, LOSS_NAMES, PAPER_LOSSES, loss_alpha
from olsdesk.core import study
from olsdesk.core.runs import RunListing, RunReader, RunStore, list_runs
from olsdesk.gui.panels.common import Canvas, NumberItem, class_color, row_table, style_plot
from olsdesk.gui.workers import start_worker

RUN_COLUMNS = ("run", "data", "model", "loss", "α / ε", "epochs", "lr", "best top-1",
               "final ECE", "status", "notes")
UNUSED = "not used"  # a setting the run's loss or optimiser ignores
# past this many runs their curves are lines without dots: a dot an epoch was 40 % of
# drawing 200 runs, and a dozen dotted lines already blur into one another
DOTTED_RUNS = 12
DRAW_BUDGET_S = 0.03  # the GUI thread's time for drawing runs between two events


class NewComparisonDialog(QDialog):
    """Which losses and how many seeds; everything else comes from the experiment panel."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New comparison")
        form = QFormLayout(self)
        self.boxes = {}
        for loss in LOSS_NAMES:
            box = QCheckBox(LOSS_LABELS[loss])
            box.setChecked(loss in PAPER_LOSSES)  # the paper's four, as olsdesk compare
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
        self.listings: list[RunListing] = []
        self.reports: dict[str, list] = {}  # the selected runs' epochs, by run name
        self.reader = RunReader()  # each run's epochs read once, in a worker
        self._listing = None  # the worker listing the runs, while it runs
        self._reading = None  # the worker reading the selected runs' epochs
        self._again = {"list": False, "read": False}  # asked for while one ran
        self._select_after: list[Path] | None = None
        self._show_selected = False  # scroll to _select_after's first run once listed
        self._to_draw: list = []  # (position, (name, epochs)) of the runs not drawn yet
        self._dotted = True
        self._draw_timer = QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.setInterval(0)
        self._draw_timer.timeout.connect(self._draw_some)
        self.where = QLabel("")
        # a long runs folder takes the room left, never widens the window (1024 px)
        self.where.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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
        self.notes.setMaximumHeight(60)
        self._notes_of: RunListing | None = None
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
        self.all_settings.toggled.connect(
            lambda: self._fill_settings(self.selected_listings()))

        self.curves = Canvas()
        self.top1_plot = self.curves.addPlot(row=0, col=0)
        style_plot(self.top1_plot, "Validation Top-1", "accuracy")
        self.ece_plot = self.curves.addPlot(row=0, col=1)
        style_plot(self.ece_plot, "Validation ECE", "error")
        # every run's final-epoch bins on one diagram (any number of runs, full axes)
        self.reliability = Canvas()
        self.diagram = self.reliability.addPlot(row=0, col=0)
        style_plot(self.diagram, "Reliability (validation, final epoch)", "accuracy",
                   "mean confidence of the bin")
        self.shares = self.reliability.addPlot(row=0, col=1)
        style_plot(self.shares, "Confidence histogram", "share of images",
                   "top-label confidence")
        for plot in (self.diagram, self.shares):
            plot.setMouseEnabled(False, False)
        self.diagram.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)
        self.shares.setXRange(0, 1, padding=0.02)
        self.reliability_legend = QLabel("")
        self.reliability_legend.setWordWrap(True)
        self.reliability_holder = QWidget()
        reliability_layout = QVBoxLayout(self.reliability_holder)
        reliability_layout.setContentsMargins(0, 0, 0, 0)
        self.reliability_legend_box = LegendBox(self.reliability_legend)
        reliability_layout.addWidget(self.reliability_legend_box)
        reliability_layout.addWidget(self.reliability, 1)
        self.metrics = QTableWidget()
        self.metrics.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.by_loss = QTableWidget()
        self.by_loss.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        tables = QWidget()
        tables_layout = QVBoxLayout(tables)
        tables_layout.addWidget(QLabel("Final epoch, per run (best in bold green)"))
        tables_layout.addWidget(self.metrics, 1)
        tables_layout.addWidget(QLabel("Per model and loss, mean ± sd over the selected "
                                       "runs' seeds (as olsdesk compare's results.csv)"))
        tables_layout.addWidget(self.by_loss, 1)
        settings_box = QWidget()
        settings_layout = QVBoxLayout(settings_box)
        settings_row = QHBoxLayout()
        settings_row.addWidget(self.settings_note, 1)
        settings_row.addWidget(self.all_settings)
        settings_layout.addLayout(settings_row)
        settings_layout.addWidget(self.settings_table, 1)
        self.views = QTabWidget()
        # which colour is which run: a line above the plots, never over the curves
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        curves_box = QWidget()
        curves_layout = QVBoxLayout(curves_box)
        curves_layout.setContentsMargins(0, 0, 0, 0)
        self.legend_box = LegendBox(self.legend)
        curves_layout.addWidget(self.legend_box)
        curves_layout.addWidget(self.curves, 1)
        self.views.addTab(curves_box, "Curves")
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

    @property
    def busy(self) -> bool:
        """Runs are being listed, read or drawn (tests wait for it)."""
        return (self._listing is not None or self._reading is not None
                or self._draw_timer.isActive())

    def refresh(self, select: list[Path] | None = None) -> None:
        """List every run under the runs folder with its key settings and numbers, read
        in a worker; the selection is kept (or becomes ``select``)."""
        self.save_notes()
        if select is not None:  # shown: the list scrolls to the first of them
            self._select_after, self._show_selected = list(select), True
        elif self._select_after is None:  # kept: where the list was scrolled stays
            self._select_after = [listing.path for listing in self.selected_listings()]
            self._show_selected = False
        if self._listing is not None:
            self._again["list"] = True
            return
        self.where.setText(f"Reading the runs in {self.runs_dir}…")
        folder = self.runs_dir
        # the runs listed before whose files have not changed are kept, not read again
        known = {listing.path: listing for listing in self.listings}
        self._listing = start_worker(list_runs, folder, known,
                                     returned=lambda found: self._listed(folder, found),
                                     errored=self._list_failed, finished=self._listed_end)

    def _list_failed(self, message: str) -> None:
        self.where.setText(f"The runs in {self.runs_dir} could not be listed: {message}")

    def _listed_end(self) -> None:
        self._listing = None
        if self._again["list"]:
            self._again["list"] = False
            self.refresh()

    def _listed(self, folder: Path, found: list[RunListing]) -> None:
        if folder != self.runs_dir:
            return  # the runs folder changed while it was read
        self.where.setText(f"Runs in {self.runs_dir}")
        self.listings = found
        self.reader.keep_only(listing.path for listing in found)
        self.runs.blockSignals(True)
        self.runs.setSortingEnabled(False)
        self.runs.setRowCount(0)
        self.runs.setRowCount(len(found))
        for row, listing in enumerate(found):
            config = listing.config
            name = QTableWidgetItem(_relative(listing.path, self.runs_dir))
            name.setToolTip(str(listing.path))
            name.setData(Qt.ItemDataRole.UserRole, row)
            if config is None:  # damaged: listed with its sentence, the others unharmed
                self._damaged_row(row, name, listing)
                continue
            best, ece = listing.best_top1, listing.final_ece
            cells = [name, QTableWidgetItem(Path(config.data).name or config.data),
                     QTableWidgetItem(config.model), QTableWidgetItem(config.loss),
                     QTableWidgetItem(_smoothing_text(config)),
                     NumberItem(listing.epochs_done, f"{listing.epochs_done}/{config.epochs}"),
                     NumberItem(config.lr, f"{config.lr:g}"),
                     NumberItem(best, metric_text("val_top1", best)),
                     NumberItem(ece, metric_text("ece", ece)),
                     QTableWidgetItem(listing.status),  # 'interrupted' when killed mid-run
                     QTableWidgetItem(_first_line(listing.notes))]
            cells[-1].setToolTip(listing.notes)
            for col, item in enumerate(cells):
                self.runs.setItem(row, col, item)
        self.runs.setSortingEnabled(True)
        self.runs.resizeColumnToContents(0)  # whole names: two runs never look the same
        self.runs.blockSignals(False)
        self._apply_filter()
        wanted, self._select_after = self._select_after or [], None
        self.select_runs(wanted, show=self._show_selected)
        if not wanted:
            self._selection_changed()

    def _damaged_row(self, row: int, name: QTableWidgetItem, listing: RunListing) -> None:
        red = QBrush(QColor("#b00020"))
        numbers = {"epochs": -1.0, "lr": math.nan, "best top-1": math.nan,
                   "final ECE": math.nan}  # sorted with the runs' numbers, last
        cells = [name] + [NumberItem(numbers[column], "—") if column in numbers
                          else QTableWidgetItem("—") for column in RUN_COLUMNS[1:-2]]
        cells += [QTableWidgetItem("damaged"), QTableWidgetItem(listing.problem)]
        for col, item in enumerate(cells):
            item.setForeground(red)
            item.setToolTip(listing.problem)
            self.runs.setItem(row, col, item)

    def _apply_filter(self) -> None:
        """Hide the rows that miss a word of the filter (each word must appear in some
        column) and, unless asked for, the runs without a finished epoch."""
        words = self.filter.text().lower().split()
        empty_column = RUN_COLUMNS.index("epochs")
        shown = 0
        for row in range(self.runs.rowCount()):
            texts = [self.runs.item(row, c).text().lower()
                     for c in range(self.runs.columnCount()) if self.runs.item(row, c)]
            # its number, not text; a damaged run (-1) is always listed, with its sentence
            epochs_done = self.runs.item(row, empty_column).value != 0
            visible = (epochs_done or self.show_empty.isChecked()) and all(
                any(word in text for text in texts) for word in words)
            self.runs.setRowHidden(row, not visible)
            shown += visible
        self.shown_label.setText(f"{shown} of {self.runs.rowCount()} runs")

    def listed_runs(self) -> list[str]:
        """The names of the runs the table shows now (tests)."""
        return [self.runs.item(r, 0).text() for r in range(self.runs.rowCount())
                if not self.runs.isRowHidden(r)]

    def selected_listings(self) -> list[RunListing]:
        """The selected runs that can be shown (a damaged run's row says why it cannot)."""
        rows = sorted({i.row() for i in self.runs.selectedIndexes()})
        chosen = [self.listings[self.runs.item(r, 0).data(Qt.ItemDataRole.UserRole)]
                  for r in rows]
        return [listing for listing in chosen if listing.config is not None]

    def selected_stores(self) -> list[RunStore]:
        return [listing.store for listing in self.selected_listings()]

    def select_runs(self, paths: list[Path], show: bool = True) -> None:
        """Select these runs (one selection change, however many). ``show``: the list
        scrolled to the first of them, else left where it was (each selected row would
        scroll it on to the last)."""
        wanted = {Path(p).resolve() for p in paths}
        bar = self.runs.verticalScrollBar()
        kept, first = bar.value(), None
        self.runs.blockSignals(True)
        self.runs.clearSelection()
        mode = self.runs.selectionMode()
        self.runs.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.runs.rowCount()):
            listing = self.listings[self.runs.item(row, 0).data(Qt.ItemDataRole.UserRole)]
            if listing.path.resolve() in wanted:
                self.runs.selectRow(row)
                first = row if first is None else first
        self.runs.setSelectionMode(mode)
        if show and first is not None:
            self.runs.scrollToItem(self.runs.item(first, 0),
                                   QAbstractItemView.ScrollHint.PositionAtTop)
        else:
            bar.setValue(kept)
        self.runs.blockSignals(False)
        self._selection_changed()

    def save_notes(self) -> None:
        """Write the notes being edited into their run's folder."""
        self._notes_timer.stop()
        listing = self._notes_of
        if listing is None:
            return
        text = self.notes.toPlainText()
        if text == listing.notes:
            return
        try:
            listing.store.write_notes(text)
        except OSError as exc:
            self.where.setText(f"The notes could not be saved in {listing.path.name} ({exc}).")
            return
        listing.notes = text
        for row in range(self.runs.rowCount()):
            index = self.runs.item(row, 0).data(Qt.ItemDataRole.UserRole)
            if self.listings[index] is listing:
                item = self.runs.item(row, RUN_COLUMNS.index("notes"))
                item.setText(_first_line(text))
                item.setToolTip(text)

    def _show_notes(self, listings: list[RunListing]) -> None:
        self.save_notes()
        self._notes_of = listings[0] if len(listings) == 1 else None
        self.notes.blockSignals(True)
        self.notes.setPlainText(self._notes_of.notes if self._notes_of else "")
        self.notes.blockSignals(False)
        self.notes.setEnabled(self._notes_of is not None)
        self.notes.setPlaceholderText(
            "Notes on the selected run (kept in its folder as notes.md)"
            if self._notes_of is not None or not listings else
            "Select one run to read or write its notes")

    def _fill_settings(self, listings: list[RunListing]) -> None:
        """Rows = settings, columns = runs; those that differ first and marked. A value is
        the one training used (α's and the image size's defaults filled in); a setting
        the run's loss or optimiser does not use reads "not used" and differs from
        nothing."""
        table = self.settings_table
        table.clear()
        if not listings:
            table.setRowCount(0)
            table.setColumnCount(0)
            self.settings_note.setText("Select runs to see their settings.")
            return
        configs = [listing.config for listing in listings]
        keys = list(configs[0].to_dict())
        shown = [{k: (c.effective(k) if c.uses(k) else UNUSED) for k in keys} for c in configs]
        differ = [k for k in keys
                  if len({repr(v[k]) for v in shown if v[k] is not UNUSED}) > 1]
        same = [k for k in keys if k not in differ]
        rows = differ + (same if self.all_settings.isChecked() or len(listings) == 1 else [])
        table.setRowCount(len(rows))
        table.setColumnCount(len(listings))
        table.setHorizontalHeaderLabels([listing.path.name for listing in listings])
        table.setVerticalHeaderLabels(rows)
        highlight = QBrush(QColor("#fff1c2"))
        grey = QBrush(QColor("#888888"))
        for r, key in enumerate(rows):
            for c, values in enumerate(shown):
                value = values[key]
                item = QTableWidgetItem(UNUSED if value is UNUSED else
                                        "—" if value is None else str(value))
                if value is UNUSED:
                    item.setForeground(grey)
                    item.setToolTip(f"{listings[c].config.loss}/{listings[c].config.optimizer}"
                                    f" does not use {key}")
                if key in differ:
                    item.setBackground(highlight)
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        if len(listings) == 1:
            self.settings_note.setText(f"Every setting of {listings[0].path.name}.")
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
        """Settings and notes at once (the listing holds them); curves, diagrams and
        tables once the runs' epochs are read, in a worker."""
        listings = self.selected_listings()
        self._show_notes(listings)
        self._fill_settings(listings)
        if self._reading is not None:
            self._again["read"] = True
            return
        paths = [listing.path for listing in listings]
        self._reading = start_worker(self.reader.reports, paths,
                                     returned=lambda found: self._read(listings, found),
                                     errored=self._list_failed, finished=self._read_end)

    def _read_end(self) -> None:
        self._reading = None
        if self._again["read"]:
            self._again["read"] = False
            self._selection_changed()

    def _read(self, listings: list[RunListing], found: dict) -> None:
        if self._again["read"]:
            return  # the selection changed while these were read: they are drawn next
        reports = {listing.path.name: found[listing.path] for listing in listings
                   if found.get(listing.path)}
        self.reports = reports
        self.draw(reports)
        chosen = [listing for listing in listings if listing.path.name in reports]
        self._fill_metrics(reports, chosen)
        self.hint.setVisible(len(reports) < 2)
        differences = settings_that_differ([listing.config for listing in chosen])
        self.caveat.setText(f"⚠ These runs differ in {', '.join(differences)}: their numbers "
                            "are not a like-for-like comparison." if differences else "")
        self.caveat.setVisible(bool(differences))

    def curve_count(self) -> int:
        """How many runs the Top-1 plot overlays."""
        return len(self.top1_plot.listDataItems())

    def draw(self, reports: dict) -> None:
        """Overlay these runs (name -> epochs): validation Top-1 and ECE, and each run's
        final-epoch bins (accuracy at the bin's mean confidence) over the dashed diagonal
        with its confidence histogram as a share of its images, in its colour. The
        legends at once; the lines a few runs at a time between events (``DRAW_BUDGET_S``
        each), so 200 runs never freeze the window."""
        self._to_draw = list(enumerate(reports.items()))
        self._dotted = len(reports) <= DOTTED_RUNS
        for plot in (self.top1_plot, self.ece_plot, self.diagram, self.shares):
            plot.clear()
        for plot in (self.top1_plot, self.ece_plot):
            plot.disableAutoRange()  # fitted once, after the last run, not after each
        self.diagram.plot([0, 1], [0, 1], pen=pg.mkPen("#444", width=1.5,
                                                        style=Qt.PenStyle.DashLine))
        names, bins, top = [], [], 0.0
        for i, (name, runs) in enumerate(reports.items()):
            final = runs[-1]
            colour = class_color(i)
            names.append(_entry(colour, html.escape(name)))
            bins.append(_entry(colour, f"{html.escape(name)} (epoch {final.epoch}, "
                                       f"ECE {final.ece:.4f})"))
            counts = np.asarray(final.reliability_counts, dtype=float)
            top = max(top, float((counts / max(counts.sum(), 1.0)).max(initial=0.0)))
        self.shares.setYRange(0, max(top, 0.01) * 1.05, padding=0)
        self.legend.setText(" &nbsp; ".join(names))
        self.legend_box.refit()
        self.reliability_legend.setText(" &nbsp; ".join(bins))
        self.reliability_legend_box.refit()
        for canvas in (self.curves, self.reliability):  # painted once, when all are in
            canvas.setUpdatesEnabled(False)
        self._draw_some()

    def _draw_some(self) -> None:
        started = time.perf_counter()
        while self._to_draw and time.perf_counter() - started < DRAW_BUDGET_S:
            i, (name, runs) = self._to_draw.pop(0)
            self._draw_run(class_color(i), name, runs)
        if self._to_draw:
            self._draw_timer.start()
            return
        for plot in (self.top1_plot, self.ece_plot):
            plot.enableAutoRange()
        for canvas in (self.curves, self.reliability):
            canvas.setUpdatesEnabled(True)

    def _draw_run(self, colour: QColor, name: str, runs: list) -> None:
        # many runs: hairlines (a wide pen is what makes painting hundreds of lines slow)
        pen = pg.mkPen(colour, width=2 if self._dotted else 1)

        def line(plot, x, y, size: int, **style) -> None:
            if self._dotted:
                plot.plot(x, y, pen=pen, symbol="o", symbolSize=size, symbolBrush=colour,
                          **style)
            else:  # one graphics item, not PlotDataItem's three
                plot.addItem(pg.PlotCurveItem(np.asarray(x, dtype=float),
                                              np.asarray(y, dtype=float), pen=pen, **style))

        epochs = [r.epoch for r in runs]
        line(self.top1_plot, epochs, [r.val_top1 for r in runs], 5, name=name)
        line(self.ece_plot, epochs, [r.ece for r in runs], 5)
        final = runs[-1]
        counts = np.asarray(final.reliability_counts, dtype=float)
        filled = counts > 0
        line(self.diagram, np.asarray(final.reliability_confidence)[filled],
             np.asarray(final.reliability_accuracy)[filled], 6, name=name)
        edges = np.linspace(0.0, 1.0, len(counts) + 1)
        self.shares.addItem(pg.PlotCurveItem(edges, counts / max(counts.sum(), 1.0),
                                             stepMode="center", pen=pen))

    def reliability_count(self) -> int:
        """How many runs the reliability diagram overlays (tests)."""
        return len(self.diagram.listDataItems()) - 1  # less the diagonal

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

    def _fill_metrics(self, reports: dict, chosen: list[RunListing]) -> None:
        """Every tie for the best value is highlighted, not only the first."""
        names = list(reports)
        finals = [reports[n][-1] for n in names]
        best_run = study.best_runs(finals)
        keys = [key for key, _, _ in study.METRICS]
        self._fill(self.metrics, names,
                   [[metric_text(key, getattr(f, key)) for key in keys] for f in finals],
                   [[i in best_run[key] for key in keys] for i in range(len(finals))])
        histories: study.Histories = {}
        for listing in sorted(chosen, key=lambda listing: listing.config.model):
            histories.setdefault(group_name(listing.config), []).append(
                reports[listing.path.name])
        summary = study.summarise(study.finals_of(histories))
        self._fill(self.by_loss, [f"{r.loss} ({r.runs})" for r in summary.rows],
                   [[metric_text(k, r.mean[k], r.std[k] if r.runs > 1 else None) for k in keys]
                    for r in summary.rows],
                   [[summary.is_best(k, r.loss) for k in keys] for r in summary.rows])

    def _new_comparison(self) -> None:
        dialog = NewComparisonDialog(self)
        if dialog.exec() and dialog.losses():
            self.comparison_requested.emit(dialog.losses(), dialog.seeds.value())


def _smoothing_text(config) -> str:
    """The loss's own knob: α for OLS and TF-KD, ε for label smoothing, γ for focal loss
    (FLSD-53 when auto), the margin and λ for MbLS."""
    alpha = loss_alpha(config.loss, config.alpha)
    if alpha is not None:
        return f"α {alpha:g}"
    if config.loss == "ls":
        return f"ε {config.epsilon:g}"
    if config.loss == "focal":
        return "FLSD-53" if config.focal_gamma is None else f"γ {config.focal_gamma:g}"
    if config.loss == "mbls":
        return f"m {config.mbls_margin:g}, λ {config.mbls_lambda:g}"
    return "—"


def group_name(config) -> str:
    """The row of the per-loss table a run joins: its model, loss and the loss's own
    setting ('resnet50 · online label smoothing α 0.3'), so the table groups by model."""
    knob = _smoothing_text(config)
    remedies = [text for on, text in ((config.sampling == "balanced", "class-balanced sampling"),
                                      (config.class_weights, "class weights")) if on]
    return (f"{config.model} · {LOSS_LABELS[config.loss]}"
            + ("" if knob == "—" else f" {knob}") + "".join(f", {r}" for r in remedies))


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


def settings_that_differ(configs) -> list[str]:
    """What differs between the runs' settings (as training used them: the image size's
    default filled in) that their numbers depend on."""
    found: list[str] = []
    for field, label in COMPARABLE:
        if len({c.effective(field) for c in configs}) > 1 and label not in found:
            found.append(label)
    return found


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


LEGEND_LINES = 4  # a legend above the plots scrolls past this many lines


def _entry(colour: QColor, text: str) -> str:
    """A legend entry, its line in the run's colour: lines break between entries, never
    inside one ('resnet50-' / 'ls-seed2')."""
    text = text.replace("-", "&#8209;").replace(" ", "&nbsp;")  # non-breaking
    return f'<span style="color:{colour.name()}">━━</span>&nbsp;{text}'



class LegendBox(QScrollArea):
    """A wrapped label (a run a colour) above the plots, never over them: as high as its
    lines up to LEGEND_LINES, then scrolling, so 50 runs' names leave the plots their
    room."""

    def __init__(self, label: QLabel) -> None:
        super().__init__()
        self.setWidget(label)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        label = self.widget()
        lines = label.fontMetrics().lineSpacing()
        needed = label.heightForWidth(max(self.viewport().width(), 1)) if label.text() else 0
        return QSize(super().sizeHint().width(), min(max(needed, lines), lines * LEGEND_LINES))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return self.sizeHint()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.updateGeometry()  # the lines its text wraps to changed with the width

    def refit(self) -> None:
        """After the label's text changed."""
        self.updateGeometry()
