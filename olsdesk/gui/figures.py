"""A study's and an evaluation's figures as PNG, drawn by the app's own panels
(offscreen is fine).

``write_comparison_figures`` is the ``FigureRenderer`` that ``olsdesk compare`` passes
to ``core.study``, ``write_evaluation_figures`` the one ``olsdesk evaluate`` passes to
``core.evaluation``; importing this module fails where Qt cannot load, and the CLI then
writes the tables without figures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import shiboken6
from PySide6.QtCore import Qt, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QGridLayout, QHBoxLayout, QLabel, QWidget

from olsdesk.config import RECALIBRATOR_LABELS
from olsdesk.core.evaluation import Evaluation, reliability_tables
from olsdesk.core.study import Histories, TestComparison, arm_label, seed_band
from olsdesk.gui.panels.common import Canvas, class_color, style_plot, uncached
from olsdesk.gui.panels.embedding import EmbeddingPanel
from olsdesk.gui.panels.evaluation import (
    draw_comparison_risk_coverage,
    draw_familiarity,
    draw_risk_coverage,
)
from olsdesk.gui.panels.reliability import ReliabilityPanel
from olsdesk.gui.panels.soft_labels import MAX_VALUE_CELLS, SoftLabelsPanel

SIZE = (1200, 800)


def _app():
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # figures need no screen
    if QApplication.instance() is None:
        qInstallMessageHandler(_quiet_offscreen)
    return QApplication.instance() or QApplication([])


def _quiet_offscreen(mode, context, message: str) -> None:
    """Qt's messages, less the offscreen plugin's note on every window (meaningless for a
    figure)."""
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


CELL_PIXELS = 18  # a class's pixels in a confusion_matrix.png of many classes


def _save(widget, path: Path, size=SIZE) -> str:
    widget.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)  # no flash in the app
    widget.resize(*size)
    widget.show()
    _app().processEvents()
    widget.grab().save(str(path))
    widget.close()
    shiboken6.delete(widget)  # now, on this thread: never left to a later garbage collection
    return path.name


def write_comparison_figures(histories: Histories, out: str | Path,
                             test: TestComparison | None = None) -> list[str]:
    """Loss -> [each seed's reports]. Writes curves, reliability, OLS matrix, embeddings
    and, with a test comparison, the risk-coverage curves (one a loss)."""
    _app()
    out = Path(out)
    written = []

    graphics = pg.GraphicsLayoutWidget()
    for col, (attr, title) in enumerate((("val_top1", "Validation Top-1"),
                                         ("ece", "Validation ECE"))):
        plot = graphics.addPlot(row=0, col=col)
        style_plot(plot, f"{title} (mean over seeds)", title.split()[-1])
        plot.addLegend(offset=(-10, -10) if attr == "val_top1" else (-10, 10))
        for i, (loss, runs) in enumerate(histories.items()):
            epochs, mean, lo, hi = seed_band(runs, attr)
            colour = class_color(i)
            plot.plot(epochs, mean, pen=pg.mkPen(colour, width=2.5),
                      symbol="o", symbolSize=5, symbolBrush=colour, name=arm_label(loss))
            if len(runs) > 1:
                band = pg.FillBetweenItem(pg.PlotDataItem(epochs, lo), pg.PlotDataItem(epochs, hi),
                                          brush=pg.mkBrush(colour.red(), colour.green(),
                                                           colour.blue(), 40))
                plot.addItem(band)
    written.append(_save(graphics, out / "curves.png", (1400, 560)))

    def grid(panel_type) -> QWidget:
        """One ``panel_type`` a loss, showing seed 0's final epoch, two to a row."""
        holder = QWidget()
        layout = QGridLayout(holder)
        columns = 2 if len(histories) > 2 else len(histories)
        for i, (loss, runs) in enumerate(histories.items()):
            panel = panel_type()
            panel.show_report(runs[0][-1])
            label = QLabel(f"<b>{arm_label(loss)} (seed 0, final epoch)</b>")
            layout.addWidget(label, (i // columns) * 2, i % columns)
            layout.addWidget(panel, (i // columns) * 2 + 1, i % columns)
        return holder

    rows = (len(histories) + 1) // 2
    written.append(_save(grid(ReliabilityPanel), out / "reliability.png", (1400, 620 * rows)))

    if "ols" in histories:
        panel = SoftLabelsPanel()
        panel.hide_controls()
        panel.show_report(histories["ols"][0][-1])
        written.append(_save(panel, out / "ols_soft_labels.png", (1000, 800)))

    written.append(_save(grid(EmbeddingPanel), out / "embeddings.png", (1400, 560 * rows)))
    if test is not None and test.curves:
        canvas = Canvas()
        plot = canvas.addPlot()
        style_plot(plot, f"Risk-coverage on {test.n_images} test images (mean over seeds)",
                   "error rate among the answered", "coverage (most confident first)")
        plot.addLegend(offset=(10, 10))
        draw_comparison_risk_coverage(plot, test)
        written.append(_save(canvas, out / "risk_coverage.png", (900, 600)))
    return written


def write_evaluation_figures(ev: Evaluation, out: str | Path) -> list[str]:
    """The test split's reliability diagrams (raw and temperature-scaled) and its
    row-normalised confusion matrix."""
    _app()
    out = Path(out)
    holder = QWidget()
    layout = QHBoxLayout(holder)
    for bins, result, label in zip(reliability_tables(ev), (ev.raw, ev.scaled),
                                   ("raw", f"temperature-scaled, T = {ev.temperature:.2f}"),
                                   strict=True):
        panel = ReliabilityPanel()
        panel.set_title(f"Reliability diagram (test, {label})")
        lo, hi = result.interval("ece")
        panel.show_bins(bins.counts, bins.accuracy, bins.confidence, result.value["top1"],
                        float(np.nansum(bins.confidence * bins.counts) / bins.counts.sum()),
                        f"{len(ev.labels)} test images\nECE {result.value['ece']:.4f} "
                        f"(95 % CI {lo:.4f}–{hi:.4f})\nMCE {result.value['mce']:.4f}\n"
                        f"adaptive ECE {result.value['adaptive_ece']:.4f}")
        layout.addWidget(panel)
    written = [_save(holder, out / "reliability.png", (1400, 620))]
    # the smooth reliability curves with their bands: raw and the chosen recalibrator
    holder = QWidget()
    layout = QHBoxLayout(holder)
    for name, (table, band) in ev.smooth_tables().items():
        panel = ReliabilityPanel()
        panel.set_title(f"Smoothed reliability (test, {RECALIBRATOR_LABELS[name]})")
        result = ev.results()[name]
        lo, hi = result.interval("smooth_ece")
        bins = ev.reliability(name)  # computed by Evaluation.prepare, off this thread
        panel.show_bins(bins.counts, bins.accuracy, bins.confidence, result.value["top1"],
                        float(np.nansum(bins.confidence * bins.counts) / bins.counts.sum()),
                        "")
        panel.smoothed.setChecked(True)
        panel.smoothed.hide()  # a control, not part of the figure
        supported = table.supported
        panel.show_smooth(table.confidence, np.where(supported, table.accuracy, np.nan),
                          np.where(supported, band, np.nan),
                          f"smooth ECE {result.value['smooth_ece']:.4f} (95 % CI {lo:.4f}–"
                          f"{hi:.4f}), bandwidth {table.bandwidth:.3f}")
        layout.addWidget(panel)
    written.append(_save(holder, out / "reliability_smooth.png", (1400, 620)))
    for name, draw, size, axes in (
            ("risk_coverage.png", draw_risk_coverage, (900, 600),
             ("error rate among the answered", "coverage (most confident first)")),
            ("familiarity.png", draw_familiarity, (900, 500),
             ("share of images", "familiarity (higher: more like the training data; "
                                 "log scale)"))):
        canvas = Canvas()
        plot = canvas.addPlot()
        style_plot(plot, "", *axes)
        plot.addLegend(offset=(10, 10))
        draw(plot, ev)
        written.append(_save(canvas, out / name, size))
    counts = ev.confusion()
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    panel = SoftLabelsPanel()
    panel.hide_controls()
    panel.set_classes(ev.class_names)
    panel.show_matrix(rates, f"Confusion matrix on {len(ev.labels)} test images: counts, "
                      "coloured by the share of the true class's images", "predicted class",
                      "share of the row", values=counts, value_format="{:d}")
    written.append(_save(panel, out / "confusion_matrix.png", confusion_size(len(counts))))
    return written


def confusion_size(k: int) -> tuple[int, int]:
    """confusion_matrix.png's size: 1000 x 800 while every cell can carry its count
    (MAX_VALUE_CELLS classes); beyond, CELL_PIXELS a class, so each row of RadImageNet's
    165 is named and each cell can be read zoomed in (the counts are in
    confusion_matrix.csv, the largest errors in top_confusions.csv)."""
    if k <= MAX_VALUE_CELLS:
        return 1000, 800
    return k * CELL_PIXELS + 500, k * CELL_PIXELS + 200


def export_plot(graphics: pg.GraphicsLayoutWidget, base: str | Path,
                hidden=(), scale: float = 2.0) -> list[Path]:
    """The plots of ``graphics`` alone as ``base``.svg and ``base``.png (``scale`` x the
    on-screen size, white background), without the panel's controls and with the items
    in ``hidden`` (hover read-outs) left out of the picture.

    Both are Qt's own renderings of the scene (QSvgGenerator keeps text as text; the PNG
    is drawn as a high-density screen draws it, every item scaled alike): pyqtgraph's
    SVGExporter fails on the paths Qt 6.11 writes (pyqtgraph issue 3485) and its
    ImageExporter enlarges some text items and not others."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtSvg import QSvgGenerator

    base = Path(base)
    scene = graphics.scene()
    # the auto-range "A" buttons a hover leaves showing are controls, not the figure
    buttons = [item for item in scene.items() if isinstance(item, pg.ButtonItem)]
    shown = [item for item in [*hidden, *buttons] if item.isVisible()]
    exporting = []
    for item in shown:
        item.hide()
    try:
        rect = graphics.viewRect()  # what the panel shows of its scene
        target = QRectF(0, 0, rect.width(), rect.height())
        svg = QSvgGenerator()
        svg.setFileName(str(base.with_suffix(".svg")))
        # the screen's resolution: at the generator's default 72 dpi every font (in
        # points) is drawn at 3/4 of its size on screen, under a matrix(0.75, ...)
        svg.setResolution(graphics.logicalDpiX())
        svg.setSize(rect.size().toSize())
        svg.setViewBox(target)
        svg.setTitle(base.stem)
        svg.setDescription("olsdesk")
        image = QImage(max(1, round(rect.width() * scale)),
                       max(1, round(rect.height() * scale)), QImage.Format.Format_RGB32)
        image.setDevicePixelRatio(scale)
        # export mode: scatter symbols drawn as shapes, not pasted from their pixmap
        # atlas (which an SVG holds as garbled little images)
        exporting = [item for item in scene.items() if hasattr(item, "setExportMode")]
        for item in exporting:
            item.setExportMode(True, {"antialias": True})
        with uncached(scene):  # text as text, drawn at the figure's scale
            for device in (svg, image):
                painter = QPainter(device)
                painter.setRenderHint(QPainter.RenderHint.Antialiasing)
                painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
                painter.fillRect(target, QColor("white"))
                scene.render(painter, target, rect)
                painter.end()
        image.save(str(base.with_suffix(".png")))
    finally:
        for item in exporting:
            item.setExportMode(False)
        for item in shown:
            item.show()
    return [base.with_suffix(".svg"), base.with_suffix(".png")]
