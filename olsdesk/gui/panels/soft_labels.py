"""Soft labels: the K x K matrix as a heatmap with a fixed 0-1 colour bar.

Shows either the targets the loss trained against (OLS's evolving S) or the validation
mean-prediction matrix, so CE and LS runs have a matrix worth looking at too. Hover
reads "true CT/lung/nodule -> CT/lung/mass: 0.12".
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from olsdesk.core.report import EpochReport
from olsdesk.gui.panels.common import short_names

MATRICES = (
    ("soft_labels", "Soft labels the loss trained against"),
    ("mean_prediction", "Validation mean prediction"),
)


class SoftLabelsPanel(QWidget):
    """A heatmap of one epoch's matrix; the epoch comes from the shared epoch slider."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: EpochReport | None = None
        self.class_names: tuple[str, ...] = ()
        self.matrix_choice = QComboBox()
        for key, label in MATRICES:
            self.matrix_choice.addItem(label, key)
        self.matrix_choice.currentIndexChanged.connect(self._redraw)
        self.hover = QLabel(" ")
        self.hover.setMinimumWidth(320)
        top = QHBoxLayout()
        self.choice_label = QLabel("Show:")
        top.addWidget(self.choice_label)
        top.addWidget(self.matrix_choice)
        top.addStretch(1)
        top.addWidget(self.hover)

        self.graphics = pg.GraphicsLayoutWidget()
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
        self.title = pg.LabelItem("", size="11pt")
        self.graphics.addItem(self.title, row=1, col=0)
        self.graphics.scene().sigMouseMoved.connect(self._hover)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)

    @property
    def matrix_key(self) -> str:
        return self.matrix_choice.currentData()

    def follow(self, session) -> None:
        """Show the epoch chosen in ``session`` (a RunSession)."""
        session.epoch_selected.connect(self.show_report)

    def show_report(self, report: EpochReport | None) -> None:
        self.report = report
        if report is not None and report.class_names != self.class_names:
            self._set_classes(report.class_names)
        self._redraw()

    def set_classes(self, names) -> None:
        """Set the axes' class ticks (at run start, ahead of the first report)."""
        if tuple(names) != self.class_names:
            self._set_classes(tuple(names))

    def _set_classes(self, names: tuple[str, ...]) -> None:
        self.class_names = tuple(names)
        short = short_names(names)
        left = self.plot.getAxis("left")
        left.setTicks([[(i + 0.5, s) for i, s in enumerate(short)]])
        # wide enough for every name: pyqtgraph silently drops labels that do not fit
        left.setWidth(max(QFontMetrics(left.font()).horizontalAdvance(s) for s in short) + 34)
        # columns are narrow: break 'lung/normal' over two lines, and number them past 16
        if len(names) <= 16:
            columns = [s.replace("/", "/\n").replace("_", "_\n") for s in short]
        else:
            columns = [str(i + 1) for i in range(len(names))]
        bottom = self.plot.getAxis("bottom")
        bottom.setTicks([[(i + 0.5, s) for i, s in enumerate(columns)]])
        font = QFont()
        font.setPointSize(8)
        bottom.setStyle(tickFont=font)
        bottom.setHeight(60 if len(names) <= 16 else 40)
        k = len(names)
        self.plot.setRange(xRange=(0, k), yRange=(0, k), padding=0.02)

    def shown_matrix(self) -> np.ndarray | None:
        """The matrix drawn now (None before the first epoch)."""
        return self.image.image

    @property
    def colour_levels(self) -> tuple[float, float] | None:
        """The colour bar's range: fixed at 0-1 so colours compare across epochs."""
        levels = self.image.levels
        return None if levels is None else (float(levels[0]), float(levels[1]))

    def current_matrix(self) -> np.ndarray | None:
        if self.report is None:
            return None
        return np.nan_to_num(getattr(self.report, self.matrix_key), nan=0.0)

    def _redraw(self) -> None:
        matrix = self.current_matrix()
        if matrix is None:
            self.image.clear()
            self.title.setText("")
            return
        label = dict(MATRICES)[self.matrix_key]
        self.show_matrix(matrix, f"{label}, epoch {self.report.epoch} of {self.report.epochs}",
                         "soft label over classes" if self.matrix_key == "soft_labels"
                         else "predicted class (mean probability)")

    def show_matrix(self, matrix: np.ndarray, title: str, bottom_label: str,
                    scale_label: str = "probability") -> None:
        """Draw any class x class matrix of values in [0, 1] (a confusion matrix's rows
        normalised, say) on the fixed colour scale."""
        self.colorbar.getAxis("left").setLabel(scale_label)
        self.image.setImage(matrix, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(0, 0, matrix.shape[1], matrix.shape[0])
        self.plot.setLabel("bottom", bottom_label)
        self.title.setText(title)

    def readout(self, row: int, col: int) -> str:
        """What hovering cell (row, col) says: 'true A → B: 0.120'."""
        matrix = self.current_matrix()
        if matrix is None or not (0 <= row < matrix.shape[0] and 0 <= col < matrix.shape[1]):
            return ""
        return f"true {self.class_names[row]} → {self.class_names[col]}: {matrix[row, col]:.3f}"

    def _hover(self, pos) -> None:
        if self.report is None or not self.plot.sceneBoundingRect().contains(pos):
            return
        point = self.plot.vb.mapSceneToView(pos)
        text = self.readout(int(np.floor(point.y())), int(np.floor(point.x())))
        if text:
            self.hover.setText(text)
            self.image.setToolTip(text)
