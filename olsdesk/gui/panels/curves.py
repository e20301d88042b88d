"""Curves: train and validation loss, Top-1, Top-5 and ECE per epoch, values on hover."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from olsdesk.core.report import EpochReport, best_report
from olsdesk.gui.panels.common import (
    SERIES,
    Canvas,
    RedrawWhenShown,
    fit_y,
    style_plot,
)
from olsdesk.gui.workers import next_turn_timer

# plot title, y label, [(legend name, report field, colour key)]
PLOTS = (
    ("Loss (validation: NLL)", "loss", [("train", "train_loss", "train"),
                                        ("validation", "val_nll", "val")]),
    ("Top-1 accuracy", "accuracy", [("train", "train_top1", "train"),
                                     ("validation", "val_top1", "val")]),
    ("Top-5 accuracy", "accuracy", [("train", "train_top5", "train"),
                                     ("validation", "val_top5", "val")]),
    ("Calibration error (validation)", "error", [("ECE", "ece", "val"),
                                                 ("adaptive ECE", "adaptive_ece", "extra")]),
)


MARKED_EPOCHS = 40  # up to this many epochs, each has a marker on every curve


class CurvesPanel(RedrawWhenShown, QWidget):
    """Four plots updated with every EpochReport; hovering shows the epoch's values."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = Canvas()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)
        self.plots: list[pg.PlotItem] = []
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.hover_labels: list[pg.TextItem] = []
        self.reports: list[EpochReport] = []
        self.selected_lines: list[pg.InfiniteLine] = []
        self.selected_epoch: int | None = None
        self.planned_epochs = 1  # of the run starting, before its first report
        # the plots still to draw with the latest reports, one a turn of the event loop
        self._undrawn: list[int] = []
        self._draw_timer = next_turn_timer(self, self._draw_next)
        # one legend above the four plots (a colour means the same in each): inside a
        # plot it covered data while training, and the hover read-out covered it
        self.legend = pg.LegendItem(colCount=3, labelTextSize="9pt")
        self.graphics.addItem(self.legend, row=0, col=0, colspan=2)
        self.legend.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Maximum)
        self.graphics.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignHCenter)
        named: set[str] = set()
        for i, (title, ylabel, series) in enumerate(PLOTS):
            plot = self.graphics.addPlot(row=1 + i // 2, col=i % 2)
            style_plot(plot, title, ylabel)
            # room for values up to '0.0000' from the start: an axis growing to fit its
            # first values re-lays out all four plots (a 40 ms repaint, 95 ms in all, at
            # the first epoch's end)
            left = plot.getAxis("left")
            left.setStyle(autoExpandTextSpace=False, tickTextWidth=QFontMetrics(
                left.style["tickFont"] or left.font()).horizontalAdvance("0.0000") + 2)
            for name, attr, colour in series:
                pen = pg.mkPen(SERIES[colour], width=2)
                self.curves[attr] = plot.plot([], [], pen=pen, name=name, symbol="o",
                                              symbolSize=6, symbolBrush=SERIES[colour],
                                              symbolPen=None, connect="finite")
                if colour not in named:
                    named.add(colour)
                    self.legend.addItem(self.curves[attr],
                                        name if colour != "val" else "validation")
            # the epoch the other panels show, as a dashed line on every plot
            line = pg.InfiniteLine(angle=90, movable=False,
                                   pen=pg.mkPen((90, 90, 90), width=1, style=Qt.PenStyle.DashLine))
            line.hide()
            plot.addItem(line, ignoreBounds=True)
            self.selected_lines.append(line)
            label = pg.TextItem(anchor=(0, 1), color="k", fill=pg.mkBrush(255, 255, 255, 220))
            label.setZValue(10)
            label.hide()
            plot.addItem(label, ignoreBounds=True)
            self.hover_labels.append(label)
            plot.scene().sigMouseMoved.connect(
                lambda pos, p=plot, s=series, lab=label: self._hover(pos, p, s, lab))
            self.plots.append(plot)
        # best.pt's epoch (the best validation Top-1), starred on the Top-1 plot
        self.best_marker = pg.ScatterPlotItem(size=16, symbol="star", pen=pg.mkPen("k"),
                                              brush=pg.mkBrush(SERIES["val"]))
        self.best_marker.setZValue(8)
        top1 = next(i for i, (_, _, series) in enumerate(PLOTS)
                    if any(attr == "val_top1" for _, attr, _ in series))
        self.plots[top1].addItem(self.best_marker)
        self.best_plot = top1

    def follow(self, session) -> None:
        """Draw every report of ``session`` (a RunSession) as it arrives."""
        session.run_planned.connect(self.plan)
        session.reports_reset.connect(self.set_reports)
        session.report_added.connect(self.add_report)
        session.epoch_selected.connect(self.show_selected)

    def show_selected(self, report: EpochReport | None) -> None:
        """Mark the epoch the slider chose (the heatmap's, reliability's, embedding's)."""
        self.selected_epoch = report.epoch if report is not None else None
        for line in self.selected_lines:
            line.setVisible(report is not None)
            if report is not None:
                line.setValue(report.epoch)

    def plan(self, epochs: int) -> None:
        """A run of ``epochs`` epochs starts: the epoch axis spans them from the start, so
        it is laid out once a run, not again at its first epoch."""
        self.planned_epochs = epochs

    def set_reports(self, reports: list[EpochReport]) -> None:
        """Show a whole run (replay) or the run so far."""
        if not reports or (self.reports and reports[0] is not self.reports[0]):
            for label in self.hover_labels:  # a read-out of another run's epoch
                label.hide()
        self.reports = list(reports)
        self.draw_when_shown(self._draw_in_turns)

    def _draw_in_turns(self) -> None:
        """Draw the four plots one at a time, each a turn of the event loop after the
        last one's paint: the slot that brought the report and each plot's drawing and
        paint run as separate events, with the window's timers and input between them,
        not as one stall (the four in one paint took 25-52 ms while training)."""
        self._undrawn = list(range(len(self.plots)))
        self._draw_timer.start()

    def _draw_next(self) -> None:
        if self._undrawn:
            self._draw_plot(self._undrawn.pop(0))
        if self._undrawn:
            self._draw_timer.start()

    def _draw_now(self) -> None:
        self._draw_timer.stop()
        while self._undrawn:
            self._draw_plot(self._undrawn.pop(0))

    def _draw_plot(self, index: int) -> None:
        plot, (_, _, series) = self.plots[index], PLOTS[index]
        epochs = np.array([r.epoch for r in self.reports], dtype=float)
        # a marker an epoch while they can be told apart; past that, lines alone (100
        # epochs of markers on eight series took 30 ms to set and 60 to paint)
        symbol = "o" if len(self.reports) <= MARKED_EPOCHS else None
        for _, attr, _ in series:
            curve = self.curves[attr]
            values = np.array([getattr(r, attr) for r in self.reports], dtype=float)
            if curve.opts["symbol"] != symbol:
                curve.setSymbol(symbol)
            curve.setData(epochs, values)
        if index == self.best_plot:
            best = best_report(self.reports)
            self.best_marker.setData([best.epoch] if best else [],
                                     [best.val_top1] if best else [])
        # the run's whole length from its first epoch: the curves grow to the right, and
        # the epoch axis (with its grid) is drawn once a run, not at every epoch
        last = max((max(r.epochs, r.epoch) for r in self.reports),
                   default=self.planned_epochs)
        plot.disableAutoRange(pg.ViewBox.XAxis)
        if getattr(plot, "_epochs_shown", None) != last:  # else the axis stays drawn
            plot._epochs_shown = last
            plot.setXRange(0.5, last + 0.5, padding=0.02)
        fit_y(plot, [getattr(r, attr) for r in self.reports for _, attr, _ in series])

    def add_report(self, report: EpochReport) -> None:
        # the selection follows a new epoch when it was on the latest (RunSession): the
        # dashed line moves with this drawing, not in a second repaint a turn later
        latest = self.reports[-1].epoch if self.reports else None
        if self.reports and self.selected_epoch == latest:
            self.show_selected(report)
        self.set_reports([*self.reports, report])

    def _hover(self, pos, plot: pg.PlotItem, series, label: pg.TextItem) -> None:
        if not self.reports or not plot.sceneBoundingRect().contains(pos):
            label.hide()
            return
        x = plot.vb.mapSceneToView(pos).x()
        report = min(self.reports, key=lambda r: abs(r.epoch - x))
        lines = [f"epoch {report.epoch}"] + [f"{name}: {getattr(report, attr):.4f}"
                                             for name, attr, _ in series]
        label.setText("\n".join(lines))
        y_range = plot.vb.viewRange()[1]
        label.setPos(report.epoch, y_range[0] + 0.02 * (y_range[1] - y_range[0]))
        label.show()

    def flush(self) -> None:
        """Draw now what waits (for the tab to be shown, or for the next turn)."""
        super().flush()
        self._draw_now()

    def series_points(self, attr: str) -> tuple[np.ndarray, np.ndarray]:
        """The (epochs, values) a curve shows; for tests and export."""
        self._draw_now()
        x, y = self.curves[attr].getData()
        return (np.array([]), np.array([])) if x is None else (x, y)

