"""Small helpers the panels share: class colours, plot styling, tables."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGraphicsItem,
    QGraphicsTextItem,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QStyledItemDelegate,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
)

from olsdesk.gui.workers import next_turn_timer

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True, background="w", foreground="k")

# Kelly's colours of maximum contrast, less the near-twins (a second yellow, orange,
# purple and brown, a salmon beside the pink), so no two of the first classes look alike
_PALETTE = [
    "#0067A5", "#F38400", "#008856", "#BE0032", "#875692", "#F3C300", "#A1CAF1", "#882D17",
    "#8DB600", "#E68FAC", "#848482", "#C2B280", "#B3446C", "#2B3D26",
]

SERIES = {"train": "#0072B2", "val": "#D55E00", "extra": "#009E73"}


class Canvas(pg.GraphicsLayoutWidget):
    """A panel's plots. Their axes and text are drawn once into a pixmap and reused until
    they change (Qt's device-coordinate cache): replaying the tick labels of every axis at
    every repaint took 16 ms a repaint of the curves' four plots (4.5 ms cached), and while
    training shares the GIL such a repaint stalled the window 50-65 ms. Exports draw
    uncached (``uncached``): text stays text in an SVG."""

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        cache_static_items(self.scene())  # what the panel added since it was last shown
        super().showEvent(event)


def cache_static_items(scene) -> None:
    """Axes and text of ``scene`` drawn through a pixmap cache (see Canvas)."""
    for item in scene.items():
        if isinstance(item, (pg.AxisItem, QGraphicsTextItem)) and \
                item.cacheMode() == QGraphicsItem.CacheMode.NoCache:
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


@contextmanager
def uncached(scene):
    """Draw ``scene`` without item caches inside the block (a figure: vector text, and
    pixels at the figure's own scale), cached again after it."""
    cached = [item for item in scene.items()
              if item.cacheMode() != QGraphicsItem.CacheMode.NoCache]
    modes = [item.cacheMode() for item in cached]
    for item in cached:
        item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
    try:
        yield
    finally:
        for item, mode in zip(cached, modes, strict=True):
            item.setCacheMode(mode)


class RedrawWhenShown:
    """For a panel in a tab: while its window shows another tab, it keeps only the latest
    drawing to do and does it when shown (or flushed, before an export). An epoch's end
    then redraws the visible panel alone, not all four at once on the GUI thread."""

    _pending_draw: Callable[[], None] | None = None

    def draw_when_shown(self, draw: Callable[[], None]) -> None:
        if self.window().isVisible() and not self.isVisible():
            self._pending_draw = draw
        else:
            self._pending_draw = None
            draw()

    def draw_soon(self, draw: Callable[[], None]) -> None:
        """As ``draw_when_shown``, but a shown panel draws in a later turn of the event
        loop (``next_turn_timer``), not inside the slot that asked."""
        self._pending_draw = draw
        if not (self.window().isVisible() and not self.isVisible()):
            if getattr(self, "_soon", None) is None:
                self._soon = next_turn_timer(self, self.flush)
            self._soon.start()

    def flush(self) -> None:
        """Draw now what waits for the panel to be shown."""
        draw, self._pending_draw = self._pending_draw, None
        if draw is not None:
            draw()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.flush()
        super().showEvent(event)


def class_color(index: int) -> QColor:
    """A distinct colour per class; past the palette, evenly spaced hues."""
    if index < len(_PALETTE):
        return QColor(_PALETTE[index])
    # past the palette (RadImageNet has 165 classes): hues a golden angle apart, in three
    # lightness levels, so neighbouring classes never get the same colour
    n = index - len(_PALETTE)
    return QColor.fromHsvF((n * 0.6180339887) % 1.0, 0.75, (1.0, 0.78, 0.56)[n % 3])


class EpochAxis(pg.AxisItem):
    """An epoch axis: whole numbers only (no 1.2, 1.4 … between epochs 1 and 2)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 - pyqtgraph's name
        levels = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            whole = [v for v in values if abs(v - round(v)) < 1e-9]
            if spacing >= 1 and whole:
                levels.append((spacing, whole))
        if not levels:  # zoomed in to less than one epoch: the epochs in view
            levels = [(1.0, [float(v) for v in range(int(np.ceil(minVal)),
                                                      int(np.floor(maxVal)) + 1)])]
        return levels


def fit_y(plot: pg.PlotItem, values, floor: float = 0.02) -> None:
    """Set ``plot``'s y range to its values (10 % margins), never to a span under
    ``floor``: one epoch's single value would otherwise get ticks like 0.5456858317335366.
    The ends snap outward to a grid of a fifth of the span, rounded to 1, 2 or 5 times a
    power of ten, so most epochs leave the range (and the axis, whose labels are costly
    to lay out and draw again) as it was. Set here, not by pyqtgraph's auto-range, which
    works it out while painting and then paints again with the new axes."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    plot.disableAutoRange(pg.ViewBox.YAxis)
    if not finite.size:  # nothing yet: 0-1, never the last run's range or pyqtgraph's
        low, high = 0.0, 1.0
    else:
        low, high = float(finite.min()), float(finite.max())
        if high - low < floor:
            centre = (high + low) / 2
            low, high = centre - floor / 2, centre + floor / 2
        margin = 0.1 * (high - low)
        low, high = low - margin, high + margin
        step = nice_step((high - low) / 5)
        low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    if getattr(plot, "_fitted_y", None) != (low, high):
        plot._fitted_y = (low, high)
        plot.setYRange(low, high, padding=0)


def nice_step(raw: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def style_plot(plot: pg.PlotItem, title: str, left: str, bottom: str = "epoch") -> None:
    if bottom == "epoch":
        plot.setAxisItems({"bottom": EpochAxis("bottom")})
    plot.setTitle(title, size="11pt")
    plot.setLabel("left", left)
    plot.setLabel("bottom", bottom)
    plot.showGrid(x=True, y=True, alpha=0.2)
    for axis in ("left", "bottom"):  # 0.52 must read 0.52, not 520 (x0.001)
        plot.getAxis(axis).enableAutoSIPrefix(False)
        # ticks and grid lines at the labelled values only: the finest level (36 of an
        # axis's 45 lines, too faint to read) made drawing an axis with its grid 4.9 ms
        # instead of 1.1
        plot.getAxis(axis).setStyle(maxTickLevel=1)


TEXT_ROLE = Qt.ItemDataRole.UserRole + 7  # the text a NumberItem shows


class NumberItem(QTableWidgetItem):
    """A table cell that sorts by its number; NaN (a failed file, no value) sorts last.

    The number is its display data, so that Qt compares cells itself (a Python ``__lt__``
    made sorting 20,000 predictions take 0.2-0.6 s, at every addition); the text shown
    is ``TEXT_ROLE``'s, drawn by the ``ShownText`` delegate that ``row_table`` sets."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__()
        self.value = float(value)
        self.setData(Qt.ItemDataRole.DisplayRole,
                     math.inf if math.isnan(self.value) else self.value)
        self.setData(TEXT_ROLE, text)

    def text(self) -> str:
        return self.data(TEXT_ROLE)


class ShownText(QStyledItemDelegate):
    """Draws (and sizes) a cell with its TEXT_ROLE text where it has one."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 - Qt's name
        super().initStyleOption(option, index)
        text = index.data(TEXT_ROLE)
        if text is not None:
            option.text = text


def row_table(columns, single: bool) -> QTableWidget:
    """A read-only, sortable table that selects whole rows; the first column stretches."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    rows_view(table, single)
    table.setItemDelegate(ShownText(table))
    table.setSortingEnabled(True)
    return table


def rows_view(view: QTableView, single: bool) -> QTableView:
    """``view`` read-only, selecting whole rows (one, or several), its first column
    stretched: ``row_table``'s, or a QTableView over a model of a panel's own."""
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection if single
                          else QAbstractItemView.SelectionMode.ExtendedSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    return view


def array_pixmap(image: np.ndarray, size: int = 56) -> QPixmap:
    """A [0, 1] gray or RGB array as a pixmap at most ``size`` pixels a side."""
    array = np.ascontiguousarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    if array.ndim == 2:
        qimage = QImage(array.data, array.shape[1], array.shape[0], array.strides[0],
                        QImage.Format.Format_Grayscale8)
    else:
        array = np.ascontiguousarray(array[..., :3])
        qimage = QImage(array.data, array.shape[1], array.shape[0], array.strides[0],
                        QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimage.copy()).scaled(
        size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)


class FittedPicture(QLabel):
    """A picture drawn as large as the label's room allows (up to ``largest`` pixels),
    redrawn when the room changes: never larger than the label, so never over the text
    laid out below it."""

    def __init__(self, largest: int = 260, parent=None) -> None:
        super().__init__(parent)
        self.largest = largest
        self._image: np.ndarray | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)

    def show_image(self, image: np.ndarray | None) -> None:
        """A [0, 1] gray or RGB array, or None for nothing."""
        self._image = image
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if self._image is None:
            self.clear()
            return
        room = max(min(self.width(), self.height(), self.largest), 32)
        self.setPixmap(array_pixmap(self._image, room))
