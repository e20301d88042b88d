"""Soft labels: the K x K matrix as a heatmap with a fixed 0-1 colour bar.

Shows either the targets the loss trained against (OLS's evolving S) or the validation
mean-prediction matrix, so CE and LS runs have a matrix worth looking at too. Hover
reads "true CT/lung/nodule -> CT/lung/mass: 0.12". Lines part the modalities (named along
the top) and, thinner, the anatomies within one; the wheel zooms, a drag pans and a
double-click shows the whole matrix again, and once few enough cells are in view (165
classes zoomed to 24) each carries its value.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QEvent, Signal
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from olsdesk.core.names import short_names
from olsdesk.core.report import EpochReport
from olsdesk.gui.panels.common import Canvas, RedrawWhenShown, nice_step

MATRICES = (
    ("soft_labels", "Soft labels the loss trained against"),
    ("mean_prediction", "Validation mean prediction"),
)
# colour scales. What OLS learns sits off the diagonal, at 0.01-0.15, which the full 0-1
# scale paints one dark purple; the off-diagonal range alone paints a label-smoothing
# target (every off-diagonal value equal) one colour. The log scale shows both the
# diagonal and what lies off it, so it is the default; the bar says which scale is used.
SCALES = (
    ("log", "log scale"),
    ("full", "0 – 1"),
    ("off_diagonal", "off-diagonal range"),
)
LOG_FLOOR = 1e-3  # the log scale's bottom: smaller values (and 0) take its colour
MAX_VALUE_CELLS = 24  # rows and columns in view up to which cells carry their value


class SoftLabelsPanel(RedrawWhenShown, QWidget):
    """A heatmap of one epoch's matrix; the epoch comes from the shared epoch slider.
    A click on a cell says which: ``cell_clicked(true row, column)``."""

    cell_clicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: EpochReport | None = None
        self.class_names: tuple[str, ...] = ()  # the classes on the axes
        self.run_classes: tuple[str, ...] = ()  # those of the run followed, before its epochs
        self.matrix_choice = QComboBox()
        for key, label in MATRICES:
            self.matrix_choice.addItem(label, key)
        self.matrix_choice.currentIndexChanged.connect(self._redraw)
        self.scale_choice = QComboBox()
        for key, label in SCALES:
            self.scale_choice.addItem(label, key)
        self.scale_choice.setToolTip(
            "Colour scale: logarithmic from 0.001 to 1 (the diagonal and what lies off it "
            "both show), linear 0-1, or linear from 0 to the largest off-diagonal value "
            "(the diagonal left blank)")
        self.scale_choice.currentIndexChanged.connect(self._redraw)
        self.hover = QLabel(" ")
        # takes the room left beside the choices, never widens the window (1024 px)
        self.hover.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        self.choice_label = QLabel("Show:")
        top.addWidget(self.choice_label)
        top.addWidget(self.matrix_choice)
        self.scale_label = QLabel("Colours:")
        top.addWidget(self.scale_label)
        top.addWidget(self.scale_choice)
        top.addWidget(self.hover, 1)

        self.graphics = Canvas()
        self.plot = self.graphics.addPlot()
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", "true class")
        self.plot.setLabel("bottom", "soft label over classes")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"),
                                        interactive=False, label="probability")
        self.colorbar.setImageItem(self.image, insert_in=self.plot)
        # room for its widest tick ('0.0625') from the start: an axis growing to fit its first
        # labels lays the panel out again and paints it twice (30 ms more at a run's start)
        bar_axis = self.colorbar.axis
        bar_axis.setStyle(autoExpandTextSpace=False, tickTextWidth=QFontMetrics(
            bar_axis.style["tickFont"] or bar_axis.font()).horizontalAdvance("0.0000") + 2)
        # before any matrix: an empty 0-1 square, not pyqtgraph's -500...500 "(x0.001)"
        for side in ("left", "bottom"):
            self.plot.getAxis(side).enableAutoSIPrefix(False)
            self.plot.getAxis(side).setTicks([[]])
        self.plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)
        self._bar = None  # the colour bar's (levels, ticks, label) as drawn
        self._set_bar(*self._scale(np.zeros((1, 1)), "probability")[1:])
        # OLS: how many correct predictions built each row, a bar a row beside the matrix
        self.counts_plot = self.graphics.addPlot(row=0, col=1)
        self.counts_plot.setMenuEnabled(False)
        self.counts_plot.setMouseEnabled(False, False)
        self.counts_plot.invertY(True)
        self.counts_plot.setYLink(self.plot)
        self.counts_plot.hideAxis("left")
        self.counts_plot.setLabel("bottom", "correct")
        self.counts_plot.setFixedWidth(70)
        self.counts_bars = pg.BarGraphItem(x0=[], y=[], height=[], width=[])
        self.counts_plot.addItem(self.counts_bars)
        self.counts_plot.hide()
        self.title = pg.LabelItem("", size="11pt")
        self.graphics.addItem(self.title, row=1, col=0, colspan=2)
        self.graphics.scene().sigMouseMoved.connect(self._hover)
        self.graphics.scene().sigMouseClicked.connect(self._clicked)
        self.plot.vb.sigResized.connect(lambda _view: (self._layout_ticks(),
                                                       self._fit_values()))
        self.plot.vb.sigRangeChanged.connect(self._view_moved)
        self.graphics.leaveEvent = self._left  # the readout never outlives the pointer
        self.group_items: list = []  # lines and labels between groups of classes
        self.group_labels: list = []
        self.cell_texts: list = []  # the values written on the cells in view
        self._shown: np.ndarray | None = None  # the values drawn (before any log)
        self._values = None  # (values, their format, the colours' values, levels) or None
        self._written = None  # the (rows, columns) in view whose values are written
        self._count_ticks = None  # the correct-count axis's tick, as set
        self._texts = None  # (classes and fonts, the axes' texts and widths) as measured
        self._laying_out = False  # while the classes' ranges are set: ticks wait for the end

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)

    @property
    def matrix_key(self) -> str:
        return self.matrix_choice.currentData()

    def follow(self, session) -> None:
        """Show the epoch chosen in ``session`` (a RunSession); a run's classes are laid
        out when it starts, not with its first epoch's matrix (one stall fewer then)."""
        session.run_changed.connect(self._run_changed)
        # in a turn of its own, not inside the slot that brought the epoch
        session.epoch_selected.connect(lambda report: self.show_report(report, soon=True))

    def _run_changed(self, info) -> None:
        self.run_classes = tuple(info.class_names) if info is not None else ()
        self.draw_soon(self._redraw)

    def show_report(self, report: EpochReport | None, soon: bool = False) -> None:
        self.report = report
        self.hover.setText(" ")  # a readout of another epoch would be wrong
        (self.draw_soon if soon else self.draw_when_shown)(self._redraw)

    def hide_controls(self) -> None:
        """For a figure: the picture alone, no combo boxes."""
        for widget in (self.choice_label, self.matrix_choice, self.scale_label,
                       self.scale_choice, self.hover):
            widget.hide()

    def set_classes(self, names) -> None:
        """Set the axes' class ticks (at run start, ahead of the first report)."""
        if tuple(names) != self.class_names:
            self._set_classes(tuple(names))

    def _set_classes(self, names: tuple[str, ...]) -> None:
        self.class_names = tuple(names)
        font = QFont()
        font.setPointSize(8)
        self.plot.getAxis("bottom").setStyle(tickFont=font)
        k = len(names)
        grouped = self._draw_groups(names)
        self._laying_out = True  # the ticks once, for the range set last (not at each step)
        try:
            # zoomed in to a cell or two at most, out to the whole matrix (and group names)
            self.plot.vb.setLimits(xMin=-0.05 * k, xMax=1.05 * k, yMin=-0.3 * k,
                                   yMax=1.05 * k, minXRange=min(2, k), minYRange=min(2, k))
            # room above the first row for the group names
            self.plot.setRange(xRange=(0, k), yRange=(-0.06 * k if grouped else 0, k),
                               padding=0.02)
        finally:
            self._laying_out = False
        self._layout_ticks()
        self._lay_out_now()

    def _lay_out_now(self) -> None:
        """New axis sizes and title laid out now, so what changed is painted once (left to
        the layout's queued request, the first matrix was painted twice: 45 ms). Twice: a
        title resized by the first pass asks for a second one (pyqtgraph's LabelItem)."""
        for _ in range(2):
            QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)

    def _layout_ticks(self) -> None:
        """Class names on both axes, as many as fit without overlapping: columns keep
        their names while each fits its column (broken over two lines), else they are
        numbered and the rows say which number is which; with more rows than lines of
        text (165 classes), every n-th is named."""
        names = self.class_names
        k = len(names)
        if not k or self._laying_out:
            return
        left, bottom = self.plot.getAxis("left"), self.plot.getAxis("bottom")
        # pixels a class takes on each axis (a guess until the view is laid out)
        rect = self.plot.vb.boundingRect()
        (x0, x1), (y0, y1) = self.plot.vb.viewRange()
        width = k * (rect.width() if rect.width() > 50 else 400.0) / max(x1 - x0, 1e-9)
        height = k * (rect.height() if rect.height() > 50 else 400.0) / max(y1 - y0, 1e-9)
        bottom_font, left_font = bottom.style["tickFont"] or QFont(), left.font()
        texts = self._tick_texts(names, bottom_font, left_font)
        short, two_lines, named_rows = texts["short"], texts["two_lines"], texts["named"]
        bottom_metrics = QFontMetrics(bottom_font)
        numbered = texts["widest column"] + 4 > width / k
        line = QFontMetrics(left_font).height()
        row_step = max(1, int(np.ceil(line * k / height)))
        # a narrow panel (the Evaluate tab's matrix at 1024 px) keeps its width for the
        # cells: numbers alone on both axes, the names in the hover read-out and in the
        # per-class table beside it (whose row n is class n). Names take up to 36 % of
        # the width when every row gets one (the demo's 'abdomen/cal…cation' at 520 px),
        # 25 % when only every n-th does (165 classes in the Evaluate tab's 600 px)
        share = 0.36 if row_step == 1 else 0.25
        numbers_only = (texts["named widths"].max() + 34 > share * max(self.graphics.width(), 1))
        if numbered or numbers_only:
            numbered = True
            number_width = bottom_metrics.horizontalAdvance(str(k)) + 6
            step = max(1, int(np.ceil(number_width * k / width)))
            columns = [(i + 0.5, str(i + 1)) for i in range(0, k, step)]
            rows, widths = ((texts["numbers"], texts["number widths"]) if numbers_only
                            else (named_rows, texts["named widths"]))
        else:
            columns = [(i + 0.5, s) for i, s in enumerate(two_lines)]
            rows, widths = short, texts["short widths"]
        bottom.setTicks([columns])
        bottom.setHeight(40 if numbered else 60)
        left.setTicks([[(i + 0.5, rows[i]) for i in range(0, k, row_step)]])
        # wide enough for every name in view (all, unless zoomed in): pyqtgraph silently
        # drops labels that do not fit
        in_view = widths[max(0, int(np.floor(y0))):max(1, int(np.ceil(y1)))]
        left.setWidth(int((in_view if len(in_view) else widths).max()) + 34)
        for label, columns_spanned in self.group_labels:  # a group's name over its columns
            label.setVisible(label.textItem.boundingRect().width() <= columns_spanned * width / k)
        if self.group_labels and rect.height() > 50 and not self.zoomed():
            # room above the first row for the groups' names: a line of text, in rows
            needed = 1.04 * (line + 2) * k / max(rect.height() - 1.04 * (line + 2), 1.0)
            if abs(needed + y0 + 0.02 * (y1 - y0)) > 0.01 * k:  # not yet the room shown
                self.plot.setYRange(-needed, k, padding=0.02)

    def _tick_texts(self, names: tuple[str, ...], bottom_font: QFont, left_font: QFont
                    ) -> dict:
        """The axes' texts for these classes and their widths in these fonts, measured
        once (the ticks are laid out again at every zoom, pan and resize)."""
        key = (names, bottom_font.key(), left_font.key())
        if self._texts is not None and self._texts[0] == key:
            return self._texts[1]
        short = short_names(names)
        two_lines = [s.replace("/", "/\n").replace("_", "_\n") for s in short]
        column, row = QFontMetrics(bottom_font), QFontMetrics(left_font)
        named = [f"{i + 1} {s}" for i, s in enumerate(short)]
        numbers = [str(i + 1) for i in range(len(names))]

        def widths(texts):
            return np.array([row.horizontalAdvance(t) for t in texts])

        texts = {"short": short, "two_lines": two_lines, "named": named, "numbers": numbers,
                 "widest column": max(column.horizontalAdvance(part) for s in two_lines
                                      for part in s.split("\n")),
                 "short widths": widths(short), "named widths": widths(named),
                 "number widths": widths(numbers)}
        self._texts = (key, texts)
        return texts

    def zoomed(self) -> bool:
        """True while the view shows less than the whole matrix."""
        k = len(self.class_names)
        (x0, x1), (y0, y1) = self.plot.vb.viewRange()
        return bool(k) and (x0 > 0.01 * k or x1 < 0.99 * k or y1 < 0.99 * k
                            or y0 > 0.01 * k)

    def show_all(self) -> None:
        """The whole matrix in view again (a double-click does this)."""
        k = len(self.class_names)
        if k:
            self.plot.setRange(xRange=(0, k), yRange=(0, k), padding=0.02)
            self._layout_ticks()  # with room above again for the group names

    def _view_moved(self, *_args) -> None:
        """Zoomed or panned: the ticks of the classes in view, and their cells' values
        once few enough are in view."""
        self._layout_ticks()
        self._place_values()

    def _draw_groups(self, names: tuple[str, ...]) -> bool:
        """Lines between classes of different parent folders (CT/…, MR/…, US/…), each
        group named along the top, so a modality's block reads as one; thinner lines
        between the anatomies within one (MR/knee/…, MR/spine/…). True if drawn."""
        for item in self.group_items:
            self.plot.removeItem(item)
        self.group_items = []
        self.group_labels = []  # (label, the columns its group spans)
        parents = [n.split("/")[0] if "/" in n else "" for n in names]
        if len(set(parents)) < 2:
            return False
        anatomies = ["/".join(n.split("/")[:2]) if n.count("/") >= 2 else "" for n in names]
        thick, thin = [], []  # where a modality ends, and where an anatomy within one does
        start = 0
        for i in range(1, len(names) + 1):
            if i < len(names) and parents[i] == parents[start]:
                continue
            if i < len(names):
                thick.append(i)
            thin += [j for j in range(start + 1, i) if anatomies[j] != anatomies[j - 1]]
            label = pg.TextItem(parents[start], color="#333333", anchor=(0.5, 1.0))
            label.setPos((start + i) / 2, 0)  # above the first row (the y axis is inverted)
            self.plot.addItem(label)
            self.group_items.append(label)
            self.group_labels.append((label, i - start))
            start = i
        # each kind of line one item (32 lines as items of their own took 11 ms to build
        # and were most of the first paint at 165 classes), across the whole view's limits
        k = len(names)
        for where, pen in ((thick, pg.mkPen("w", width=2)),
                           (thin, pg.mkPen(255, 255, 255, 150, width=1))):
            at = np.repeat(np.asarray(where, dtype=float), 2)  # each line's two ends
            across = np.tile([-0.05 * k, 1.05 * k], len(where))
            down = np.tile([-0.3 * k, 1.05 * k], len(where))
            # the columns' lines (x = at, top to bottom), then the rows' (y = at)
            lines = pg.PlotCurveItem(np.concatenate([at, across]), np.concatenate([down, at]),
                                     connect="pairs", pen=pen)
            self.plot.addItem(lines, ignoreBounds=True)
            self.group_items.append(lines)
        return True

    def shown_matrix(self) -> np.ndarray | None:
        """The matrix shown, its values as given (None before the first epoch); a drawing
        waiting for its turn is done first."""
        self.flush()
        return self._shown

    @property
    def colour_levels(self) -> tuple[float, float] | None:
        """The values at the colour bar's ends (0.001-1 on the log scale)."""
        levels = self.image.levels
        if levels is None or self._shown is None:
            return None
        lo, hi = float(levels[0]), float(levels[1])
        return (10 ** lo, 10 ** hi) if self.scale_choice.currentData() == "log" else (lo, hi)

    def current_matrix(self) -> np.ndarray | None:
        if self.report is None:
            return None
        return np.nan_to_num(getattr(self.report, self.matrix_key), nan=0.0)

    def _redraw(self) -> None:
        names = self.report.class_names if self.report is not None else self.run_classes
        if names and names != self.class_names:
            self._set_classes(names)  # with the drawing: when shown
        matrix = self.current_matrix()
        if matrix is None:
            self.clear_matrix()
            return
        label = dict(MATRICES)[self.matrix_key]
        self.show_matrix(matrix, f"{label}, epoch {self.report.epoch} of {self.report.epochs}",
                         "soft label over classes" if self.matrix_key == "soft_labels"
                         else "predicted class (mean probability)")
        self._draw_counts()

    def row_counts(self) -> np.ndarray | None:
        """OLS's correct predictions behind each row shown (None: not OLS's matrix, or
        not recorded)."""
        if self.report is None or self.matrix_key != "soft_labels":
            return None
        counts = np.asarray(getattr(self.report, "soft_label_counts", ()))
        return counts if counts.shape == (len(self.class_names),) else None

    def _draw_counts(self) -> None:
        """The side bar: a row's count, orange where the row is the uniform one (the
        start, or a class with too few correct predictions to build a row from)."""
        counts = self.row_counts()
        self.counts_plot.setVisible(counts is not None and bool((counts >= 0).all()))
        if counts is None:
            return
        uniform = self._uniform_rows()
        brushes = [pg.mkBrush("#e08a00" if u else "#4a7fb0") for u in uniform]
        self.counts_bars.setOpts(x0=np.zeros(len(counts)), y=np.arange(len(counts)) + 0.5,
                                 height=0.8, width=np.maximum(counts, 0), brushes=brushes)
        top = max(int(counts.max()), 1)
        self.counts_plot.setXRange(0, top, padding=0.05)
        # one tick near the middle fits its 70 px (pyqtgraph's own, 100 200 300, ran into
        # each other; labels at its ends are dropped as overflowing)
        mark = nice_step(top * 0.4)
        ticks = [(mark, f"{mark:,.0f}")]
        if self._count_ticks != ticks:
            self._count_ticks = ticks
            self.counts_plot.getAxis("bottom").setTicks([ticks])

    def _uniform_rows(self) -> np.ndarray:
        matrix = np.asarray(self.report.soft_labels)
        return np.isclose(matrix, 1.0 / matrix.shape[1], atol=1e-6).all(axis=1)

    def show_matrix(self, matrix: np.ndarray, title: str, bottom_label: str,
                    scale_label: str = "probability", values: np.ndarray | None = None,
                    value_format: str = "{:.2f}") -> None:
        """Draw any class x class matrix of values in [0, 1] (a confusion matrix's rows
        normalised, say) on the colour scale chosen, which the colour bar names; with
        ``values`` (up to MAX_VALUE_CELLS classes) each non-zero cell carries its value."""
        matrix = np.asarray(matrix, dtype=float)
        self._shown = matrix
        drawn, levels, ticks, scale_label = self._scale(matrix, scale_label)
        self._set_bar(levels, ticks, scale_label)
        self.image.setImage(drawn, levels=levels, autoLevels=False)
        self.image.setRect(0, 0, matrix.shape[1], matrix.shape[0])
        if self.plot.getAxis("bottom").labelText != bottom_label:  # else it is drawn again
            self.plot.setLabel("bottom", bottom_label)
        self.title.setText(title)
        self._values = None if values is None else (np.asarray(values), value_format, drawn,
                                                    levels)
        self._written = None
        self._place_values()
        self._lay_out_now()

    def _scale(self, matrix: np.ndarray, scale_label: str):
        """What the chosen colour scale draws: (values drawn, levels, ticks, bar label)."""
        scale = self.scale_choice.currentData()
        drawn, levels, ticks = matrix, (0.0, 1.0), None
        if scale == "log":
            drawn = np.log10(np.clip(matrix, LOG_FLOOR, 1.0))
            levels = (float(np.log10(LOG_FLOOR)), 0.0)
            ticks = [[(float(np.log10(v)), f"{v:g}") for v in (0.001, 0.01, 0.1, 1.0)]]
            scale_label += ", log scale"
        elif scale == "off_diagonal" and matrix.shape[0] > 1:
            off_mask = ~np.eye(*matrix.shape, dtype=bool)
            off = matrix[off_mask]
            top = float(np.nanmax(off)) if off.size else 1.0
            drawn = np.where(off_mask, matrix, np.nan)  # the diagonal left blank
            if top > 0 and float(np.nanmin(off)) == top:
                levels = (0.0, top)
                scale_label += f" (every off-diagonal value is {top:.4f}; diagonal blank)"
            elif 0 < top:
                levels = (0.0, top)
                scale_label += f" (0 to {top:.3f}, off-diagonal only; diagonal blank)"
        return drawn, levels, ticks, scale_label

    def _set_bar(self, levels, ticks, label: str) -> None:
        """The colour bar: its scale's name and ticks."""
        if ticks is None:  # five labelled values, each distinct (never "0.3, 0.3, 0.2")
            ticks = [[(float(v), f"{v:.3g}") for v in np.linspace(*levels, 5)]]
        if (levels, ticks, label) == self._bar:
            return  # as drawn: redrawing its axes would cost each epoch's repaint 10 ms
        self._bar = (levels, ticks, label)
        self.colorbar.getAxis("left").setLabel(label)  # the bar's title side
        self.colorbar.axis.setTicks(ticks)  # its value axis
        self.colorbar.setLevels(levels)

    def _place_values(self) -> None:
        """Each non-zero cell in view carries its value while at most MAX_VALUE_CELLS rows
        and columns are in view (all of a small matrix; a 165-class one zoomed in)."""
        window = None
        if self._values is not None:
            rows, cols = self._values[0].shape
            (x0, x1), (y0, y1) = self.plot.vb.viewRange()
            r0, r1 = max(0, int(np.floor(y0))), min(rows, int(np.ceil(y1)))
            c0, c1 = max(0, int(np.floor(x0))), min(cols, int(np.ceil(x1)))
            if 0 < r1 - r0 <= MAX_VALUE_CELLS and 0 < c1 - c0 <= MAX_VALUE_CELLS:
                window = (r0, r1, c0, c1)
        if window == self._written:
            self._fit_values()
            return
        for item in self.cell_texts:
            self.plot.removeItem(item)
        self.cell_texts = []
        self._written = window
        if window is None:
            return
        values, value_format, drawn, levels = self._values
        r0, r1, c0, c1 = window
        span = max(levels[1] - levels[0], 1e-12)
        font = QFont()
        font.setPointSize(8)
        for (row, col), value in np.ndenumerate(values[r0:r1, c0:c1]):
            if not value:
                continue
            row, col = row + r0, col + c0
            # dark text on the bright (yellow) end of viridis, light text elsewhere
            level = (drawn[row, col] - levels[0]) / span if np.isfinite(drawn[row, col]) else 0
            text = pg.TextItem(value_format.format(value), anchor=(0.5, 0.5),
                               color="k" if level > 0.6 else "w")
            text.setFont(font)
            text.setPos(col + 0.5, row + 0.5)
            self.plot.addItem(text)
            self.cell_texts.append(text)
        self._fit_values()

    def _fit_values(self) -> None:
        """The cells' values show while a cell is wide and tall enough for them (the
        hover read-out gives the value of a smaller cell)."""
        if not self.cell_texts:
            return
        # pixels a cell, from the range (the view's transform lags behind a zoom)
        rect = self.plot.vb.boundingRect()
        (x0, x1), (y0, y1) = self.plot.vb.viewRange()
        cell_w, cell_h = rect.width() / max(x1 - x0, 1e-9), rect.height() / max(y1 - y0, 1e-9)
        # the text's own width (its item adds a 4 px margin each side, which may overlap)
        metrics = QFontMetrics(self.cell_texts[0].textItem.font())
        widest = max(metrics.horizontalAdvance(t.textItem.toPlainText()) for t in self.cell_texts)
        fits = cell_w >= widest + 4 and cell_h >= metrics.height()
        for text in self.cell_texts:
            text.setVisible(fits)

    def cell_values(self) -> dict[tuple[int, int], str]:
        """The values written on the cells, shown or not (tests)."""
        return {(int(t.pos().y()), int(t.pos().x())): t.textItem.toPlainText()
                for t in self.cell_texts}

    def clear_matrix(self) -> None:
        """Draw nothing (the matrix shown belonged to something no longer shown)."""
        self.image.clear()
        self._shown = None
        self._values = None
        self._place_values()
        self.title.setText("")
        self.hover.setText(" ")

    def readout(self, row: int, col: int) -> str:
        """What hovering cell (row, col) says: 'true A → B: 0.120'."""
        matrix = self.current_matrix()
        if matrix is None and self._shown is not None:  # a matrix given (the confusion)
            matrix = self._shown
        if matrix is None or not (0 <= row < matrix.shape[0] and 0 <= col < matrix.shape[1]):
            return ""
        value = f"{matrix[row, col]:.3f}"
        if self.report is None and self._values is not None:
            value = self._values[1].format(self._values[0][row, col])
        text = f"true {self.class_names[row]} → {self.class_names[col]}: {value}"
        counts = self.row_counts()
        if counts is not None:
            n = int(counts[row])
            if self.report.epoch == 1:
                text += " (the start matrix)"
            elif n < 0:
                text += " (row's correct predictions not recorded)"
            elif self._uniform_rows()[row]:
                text += (f" (uniform row: {n} correct prediction{'s' if n != 1 else ''}, "
                         "fewer than the minimum)")
            else:
                text += f" (row from {n:,} correct predictions)"
        return text

    def cell_at(self, scene_pos) -> tuple[int, int] | None:
        """The (row, column) of the drawn matrix under a scene position, if any."""
        matrix = self.shown_matrix()
        if matrix is None or not self.plot.sceneBoundingRect().contains(scene_pos):
            return None
        point = self.plot.vb.mapSceneToView(scene_pos)
        row, col = int(np.floor(point.y())), int(np.floor(point.x()))
        if 0 <= row < matrix.shape[0] and 0 <= col < matrix.shape[1]:
            return row, col
        return None

    def _clicked(self, event) -> None:
        if event.double():
            self.show_all()
            return
        cell = self.cell_at(event.scenePos())
        if cell is not None:
            self.cell_clicked.emit(*cell)

    def _left(self, event) -> None:
        self.hover.setText(" ")
        self.image.setToolTip("")

    def _hover(self, pos) -> None:
        if self._shown is None or not self.plot.sceneBoundingRect().contains(pos):
            self.hover.setText(" ")
            return
        point = self.plot.vb.mapSceneToView(pos)
        text = self.readout(int(np.floor(point.y())), int(np.floor(point.x())))
        if text:
            self.hover.setText(text)
            self.image.setToolTip(text)
