"""Reliability: the diagram (accuracy bars, gap bars, dashed diagonal, ECE/MCE/ACE written
on it) and the confidence histogram, for the epoch on the shared slider; or, switched to
"smoothed", the kernel reliability curve of the smooth ECE with its 95 % band."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QVBoxLayout, QWidget

from olsdesk.core.report import EpochReport
from olsdesk.gui.panels.common import Canvas, RedrawWhenShown, style_plot

ACCURACY = "#0072B2"
GAP = "#D55E00"
HEADROOM = 2.0  # the histogram's height over its tallest bar: room for the line labels


class ReliabilityPanel(RedrawWhenShown, QWidget):
    """The diagram and the histogram of one epoch's bins. A click on a bin of either says
    which: ``bin_clicked(bin, bins)``."""

    bin_clicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: EpochReport | None = None
        self.n_bins = 0  # of the bins drawn
        self.graphics = Canvas()
        self.smoothed = QCheckBox("Smoothed (kernel) curve with its 95 % band")
        self.smoothed.setToolTip("The smooth ECE's reliability curve (Blasiok & Nakkiran, "
                                 "2023): no bins to choose; the band comes from bootstrap "
                                 "resamples of the images")
        self.smoothed.toggled.connect(self._switch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.setContentsMargins(6, 0, 0, 0)
        row.addWidget(self.smoothed)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addWidget(self.graphics)

        self.diagram = self.graphics.addPlot(row=0, col=0)
        style_plot(self.diagram, "Reliability diagram (validation)", "accuracy", "confidence")
        self.diagram.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)
        self.diagram.setMouseEnabled(False, False)
        self.legend = legend = self.diagram.addLegend(offset=(10, 10))
        self.accuracy_bars = pg.BarGraphItem(x0=[], height=[], width=0.0, brush=ACCURACY,
                                             pen=pg.mkPen("w"))
        # hatched, so the gap reads clearly whether it lies above or inside the accuracy bar
        self.gap_bars = pg.BarGraphItem(x0=[], y0=[], height=[], width=0.0,
                                        brush=QBrush(QColor(GAP), Qt.BrushStyle.BDiagPattern),
                                        pen=pg.mkPen(GAP, width=1.5))
        self.diagram.addItem(self.accuracy_bars)
        self.diagram.addItem(self.gap_bars)
        legend.addItem(self.accuracy_bars, "accuracy")
        legend.addItem(self.gap_bars, "gap to mean confidence")
        diagonal = pg.PlotDataItem([0, 1], [0, 1], pen=pg.mkPen("#444", width=1.5,
                                                                style=Qt.PenStyle.DashLine))
        self.diagram.addItem(diagonal)
        legend.addItem(diagonal, "perfect calibration")
        self.diagonal = diagonal
        # the smoothed view: the curve over its band (hidden until switched to)
        self.band_low = pg.PlotDataItem([], [], pen=pg.mkPen(None))
        self.band_high = pg.PlotDataItem([], [], pen=pg.mkPen(None))
        self.band = pg.FillBetweenItem(self.band_low, self.band_high,
                                       brush=pg.mkBrush(ACCURACY + "40"))
        self.curve = pg.PlotDataItem([], [], pen=pg.mkPen(ACCURACY, width=2.5))
        for item in (self.band_low, self.band_high, self.band, self.curve):
            self.diagram.addItem(item)
            item.hide()
        self.smooth_text = ""
        self._bins_text = ""
        self.has_smooth = False
        # the statistics get a line of their own between the two plots: on the diagram
        # they covered its legend or its bars, whichever the bins left free
        self.metrics_text = pg.LabelItem("", size="10pt", color="k")
        self.graphics.addItem(self.metrics_text, row=1, col=0)

        self.histogram = self.graphics.addPlot(row=2, col=0)
        style_plot(self.histogram, "Confidence histogram", "images", "top-label confidence")
        self.histogram.setXLink(self.diagram)
        self.histogram_bars = pg.BarGraphItem(x0=[], height=[], width=0.0, brush="#7f7f7f",
                                              pen=pg.mkPen("w"))
        self.histogram.addItem(self.histogram_bars)
        self.accuracy_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(ACCURACY, width=2),
                                             label="accuracy", labelOpts={
                                                 "position": 0.88, "color": ACCURACY})
        self.confidence_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(
            GAP, width=2, style=Qt.PenStyle.DashLine), label="mean confidence",
            labelOpts={"position": 0.88, "color": GAP})
        for line in (self.accuracy_line, self.confidence_line):
            self.histogram.addItem(line)
            line.hide()
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(2, 2)
        self.graphics.scene().sigMouseClicked.connect(self._clicked)
        self.graphics.setToolTip("Click a bin to see its test images in the Evaluate tab")

    def follow(self, session) -> None:
        """Show the epoch chosen in ``session`` (a RunSession)."""
        session.epoch_selected.connect(self.show_report)

    def bin_at(self, scene_pos) -> int | None:
        """The bin under a scene position on the diagram or the histogram, if any."""
        for plot in (self.diagram, self.histogram):
            if self.n_bins and plot.vb.sceneBoundingRect().contains(scene_pos):
                x = plot.vb.mapSceneToView(scene_pos).x()
                if 0.0 <= x <= 1.0:
                    return min(int(x * self.n_bins), self.n_bins - 1)
        return None

    def _clicked(self, event) -> None:
        b = self.bin_at(event.scenePos())
        if b is not None and event.button() == Qt.MouseButton.LeftButton:
            self.bin_clicked.emit(b, self.n_bins)

    def bars_shown(self) -> int:
        """How many accuracy bars are drawn (one per non-empty bin)."""
        return len(self.accuracy_bars.opts["x0"])

    def statistics_text(self) -> str:
        """The ECE/MCE line under the diagram."""
        return self.metrics_text.text

    def set_title(self, title: str) -> None:
        """The diagram's title, which says which split it is on."""
        self.diagram.setTitle(title, size="11pt")

    def show_smooth(self, confidence: np.ndarray, accuracy: np.ndarray, band: np.ndarray,
                    text: str) -> None:
        """The smoothed curve (accuracy at each confidence) and its band (2 x points),
        drawn where the switch asks for it; ``text`` replaces the statistics line then."""
        confidence = np.asarray(confidence, dtype=np.float64)
        accuracy = np.asarray(accuracy, dtype=np.float64)
        shown = np.isfinite(accuracy)
        self.curve.setData(confidence[shown], np.clip(accuracy[shown], 0.0, 1.0))
        band = np.asarray(band, dtype=np.float64).reshape(2, -1)
        both = np.isfinite(band).all(axis=0) if band.shape[1] == len(confidence) else \
            np.zeros(len(confidence), dtype=bool)
        for item, edge in zip((self.band_low, self.band_high), band, strict=True):
            item.setData(confidence[both], np.clip(edge[both], 0.0, 1.0) if both.any() else [])
        self.has_smooth = bool(shown.any())
        self.smooth_text = text
        self._switch()

    def _switch(self) -> None:
        """Bars, or the smoothed curve (when there is one to show)."""
        smooth = self.smoothed.isChecked() and self.has_smooth
        for item in (self.accuracy_bars, self.gap_bars):
            item.setVisible(not smooth)
        for item in (self.band_low, self.band_high, self.band, self.curve):
            item.setVisible(smooth)
        # the legend names what is drawn: the bars, or the curve with its band
        self.legend.clear()
        shown = ([(self.curve, "smoothed accuracy (95 % band)")] if smooth else
                 [(self.accuracy_bars, "accuracy"), (self.gap_bars, "gap to mean confidence")])
        for item, name in [*shown, (self.diagonal, "perfect calibration")]:
            self.legend.addItem(item, name)
        self.metrics_text.setText(self.smooth_text if smooth else self._bins_text)

    def show_report(self, report: EpochReport | None) -> None:
        self.report = report
        self.draw_when_shown(self._draw_report)

    def _draw_report(self) -> None:
        report = self.report
        if report is None:
            for bars in (self.accuracy_bars, self.histogram_bars):
                bars.setOpts(x0=[], height=[], width=0.0)
            self.gap_bars.setOpts(x0=[], y0=[], height=[], width=0.0)
            self.metrics_text.setText("")
            self._bins_text = ""
            self.show_smooth(np.zeros(0), np.zeros(0), np.zeros((2, 0)), "")
            self.n_bins = 0
            return
        self.show_bins(report.reliability_counts, report.reliability_accuracy,
                       report.reliability_confidence, report.val_top1, report.mean_confidence,
                       f"epoch {report.epoch}\nECE {report.ece:.4f}\nMCE {report.mce:.4f}\n"
                       f"adaptive ECE {report.adaptive_ece:.4f}\n"
                       f"classwise ECE {report.classwise_ece:.4f}")
        smooth = (f"epoch {report.epoch}  ·  smooth ECE {report.smooth_ece:.4f} (bandwidth "
                  f"{report.smooth_bandwidth:.3f})  ·  debiased L2 CE "
                  f"{report.l2_ce_debiased:.4f}" if np.isfinite(report.smooth_ece) else
                  "no smoothed curve: this run was trained before olsdesk measured it")
        self.show_smooth(report.smooth_confidence, report.smooth_accuracy, report.smooth_band,
                         smooth)

    def show_bins(self, counts: np.ndarray, accuracy: np.ndarray, confidence: np.ndarray,
                  overall_accuracy: float, mean_confidence: float, text: str) -> None:
        """Draw equal-width bins (count, accuracy, mean confidence a bin; the counts are the
        confidence histogram) with the statistics ``text`` on the diagram."""
        n = self.n_bins = len(counts)
        edges = np.linspace(0.0, 1.0, n + 1)
        width = 1.0 / n
        filled = counts > 0
        acc = np.where(filled, accuracy, 0.0)
        conf = np.where(filled, confidence, 0.0)
        self.accuracy_bars.setOpts(x0=edges[:-1][filled], height=acc[filled], width=width)
        low, high = np.minimum(acc, conf), np.maximum(acc, conf)
        self.gap_bars.setOpts(x0=edges[:-1][filled], y0=low[filled],
                              height=(high - low)[filled], width=width)
        parts = [line.strip() for line in text.split("\n") if line.strip()]
        half = (len(parts) + 1) // 2  # two lines when one would be wider than a narrow panel
        lines = ["  ·  ".join(parts)] if len("  ·  ".join(parts)) <= 70 else [
            "  ·  ".join(parts[:half]), "  ·  ".join(parts[half:])]
        self._bins_text = "<br>".join(lines)
        self.metrics_text.setText(self._bins_text)
        self.histogram_bars.setOpts(x0=edges[:-1], height=counts, width=width)
        self.accuracy_line.setValue(overall_accuracy)
        self.confidence_line.setValue(mean_confidence)
        # the labels never overlap however close accuracy and confidence are: each on the
        # outer side of the pair at one height, or, near an edge of the axis where the
        # outer side has no room, both on the inner side at two heights; all above the
        # bars, which reach at most 1 / HEADROOM of the plot's height
        lower, higher = ((self.accuracy_line, self.confidence_line)
                         if overall_accuracy <= mean_confidence
                         else (self.confidence_line, self.accuracy_line))
        left, right = [(1.0, 0.5)] * 2, [(0.0, 0.5)] * 2
        if lower.value() < 0.15:
            placing = ((lower, right, 0.9), (higher, right, 0.64))
        elif higher.value() > 0.85:
            placing = ((lower, left, 0.64), (higher, left, 0.9))
        else:
            placing = ((lower, left, 0.9), (higher, right, 0.9))
        for line, anchors, height in placing:
            line.label.anchors = anchors
            line.label.setPosition(height)
            line.label.updatePosition()
        self.accuracy_line.show()
        self.confidence_line.show()
        self.histogram.setYRange(0, max(counts.max(), 1) * HEADROOM)
