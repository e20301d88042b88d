"""Embedding: the validation embedding as a scatter coloured by true class.

PCA arrives with every EpochReport; t-SNE of the latest epoch is computed on demand in a
worker thread, never on the GUI thread. Misclassified points are ringed; hovering a point
gives its class, prediction, confidence and file; clicking it opens the file in Predict,
with its Grad-CAM. With many classes (RadImageNet's 165) points are coloured by anatomy or
modality, the legend names the groups, and "Find a class" picks out one class's points.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from olsdesk.core.names import class_groups, short_names
from olsdesk.core.report import EpochReport
from olsdesk.gui.panels.common import Canvas, RedrawWhenShown, class_color
from olsdesk.gui.workers import Worker, start_worker

LEGEND_LIMIT = 24  # classes up to which each has a colour and a legend line by default
GROUP_LINES = 48  # groups named in the legend at most
GROUP_LEVELS = {"anatomy": 2, "modality": 1}  # colour by: leading levels of a name
DIMMED = 40  # alpha of the other classes' points while one class is picked out


class EmbeddingPanel(RedrawWhenShown, QWidget):
    tsne_finished = Signal(int)  # epoch; emitted once t-SNE coordinates are shown
    point_clicked = Signal(int)  # the clicked point's index in the validation split

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report: EpochReport | None = None
        self.latest_epoch = 0
        self.names: list[str] = []
        self.feature_source: Callable[[], np.ndarray | None] | None = None
        self.tsne_cache: dict[int, np.ndarray] = {}
        self._tsne: Worker | None = None

        self.projection = QComboBox()
        self.projection.addItem("PCA (every epoch)", "pca")
        self.projection.addItem("t-SNE (latest epoch, on demand)", "tsne")
        self.projection.currentIndexChanged.connect(self._projection_changed)
        self.tsne_button = QPushButton("Compute t-SNE")
        self.tsne_button.clicked.connect(self.compute_tsne)
        self.separation = QLabel(" ")
        self.status = QLabel(" ")
        # the status and the separation line share what room is left (1024 px windows):
        # they are cut short when the window is narrow instead of widening it
        for label in (self.status, self.separation):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.colour_by = QComboBox()
        for mode in ("class", *GROUP_LEVELS):
            self.colour_by.addItem(mode, mode)
        self.colour_by.setToolTip("Colour the points by their class, or by their class's "
                                  "anatomy or modality (the folders above it)")
        self.colour_by.currentIndexChanged.connect(self._style)
        self.find = QLineEdit()
        self.find.setPlaceholderText("Find a class…")
        self.find.setClearButtonEnabled(True)
        self.find.setToolTip("Type part of a class's name: its points are picked out, the "
                             "rest dimmed; clear it to see all")
        self.find.setMaximumWidth(220)
        self.find.editingFinished.connect(lambda: self.pick_class(self.find.text()))
        self.find.textChanged.connect(self._find_edited)
        self.picked: int | None = None  # the class picked out, if any
        top = QHBoxLayout()
        top.addWidget(QLabel("Projection:"))
        top.addWidget(self.projection)
        top.addWidget(self.tsne_button)
        top.addWidget(QLabel("Colour by:"))
        top.addWidget(self.colour_by)
        top.addWidget(self.find)
        top.addWidget(self.status, 1)
        top.addWidget(self.separation, 1)
        self.separation.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        self.graphics = Canvas()
        self.plot = self.graphics.addPlot()
        self.plot.setTitle("Validation embedding", size="11pt")
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        # beside the plot, never over a cluster; one text item, a line a class (pyqtgraph's
        # LegendItem laid out a label item a class: 40-55 ms on the GUI thread at a run's
        # start while training shared the GIL)
        self.legend = pg.LabelItem("", size="8pt", justify="left")
        self.graphics.addItem(self.legend, row=0, col=1)
        self.legend.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Maximum)
        self.graphics.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        # every point in one item, a brush a point from its class's (165 items, one a
        # class, took 35-45 ms to paint and 12 ms to fill each epoch at 165 classes), and
        # one item of rings on top for the misclassified points
        self.points = pg.ScatterPlotItem(size=7, pen=None, hoverable=True, hoverSize=11,
                                         hoverPen=pg.mkPen("k", width=2), tip=self._tip)
        self.points.sigClicked.connect(self._clicked)
        self.plot.addItem(self.points)
        self._brushes: list = []  # each class's brush as drawn (dimmed or not)
        self._drawn: EpochReport | None = None  # the report the points show
        # a ring around the point: its class colour stays visible (crosses on top of
        # every misclassified point made early epochs one black blob)
        self.wrong_item = pg.ScatterPlotItem(size=12, symbol="o", brush=None,
                                             pen=pg.mkPen("k", width=1.5), hoverable=True,
                                             tip=self._tip)
        self.wrong_item.setZValue(5)
        # on top, the ring takes a misclassified point's click: it opens the point too
        self.wrong_item.sigClicked.connect(self._clicked)
        self.plot.addItem(self.wrong_item)
        self._legend_classes: tuple[str, ...] = ()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)

    # --- inputs -----------------------------------------------------------------
    def set_sample_names(self, names: list[str]) -> None:
        """Validation sample names (files), indexed like EpochReport.embedding_indices."""
        self.names = list(names)

    def set_feature_source(self, source: Callable[[], np.ndarray | None] | None) -> None:
        """Where the latest epoch's high-dimensional features come from (for t-SNE)."""
        self.feature_source = source
        self.tsne_cache.clear()

    def set_classes(self, names) -> None:
        """Build the per-class items ahead of the first report (at run start)."""
        if tuple(names) != self._legend_classes:
            self._build_legend(tuple(names))

    def set_latest_epoch(self, epoch: int) -> None:
        self.latest_epoch = epoch

    def follow(self, session) -> None:
        """Show the epoch chosen in ``session`` (a RunSession); t-SNE uses its latest."""
        session.run_changed.connect(self._run_changed)
        session.reports_reset.connect(
            lambda reports: self.set_latest_epoch(reports[-1].epoch if reports else 0))
        session.report_added.connect(lambda report: self.set_latest_epoch(report.epoch))
        session.epoch_selected.connect(self.show_report)

    def _run_changed(self, info) -> None:
        self.tsne_cache.clear()
        # another run's t-SNE is gone: the choice goes back to what the plot will show
        self.projection.blockSignals(True)
        self.projection.setCurrentIndex(self.projection.findData("pca"))
        self.projection.blockSignals(False)
        self.status.setText(" ")
        if info is not None:
            self.set_sample_names(list(info.validation_names))
            # the legend is built when the panel shows, in a turn of its own (25 ms)
            self.draw_soon(lambda names=info.class_names: self.set_classes(names))

    def show_report(self, report: EpochReport | None) -> None:
        self.report = report
        if report is None:
            for item in (self.points, self.wrong_item):
                item.clear()
            self._drawn = None
            self.separation.setText(" ")
            return
        if report.class_names != self._legend_classes:
            self._build_legend(report.class_names)
        elif self.picked is not None:  # its points of this epoch
            self._write_legend(self.class_colours())
        self.separation.setText(f"separation: silhouette {report.silhouette:.3f} · "
                                f"intra/inter distance {report.intra_inter_ratio:.3f}")
        self.draw_when_shown(self._draw)

    # --- drawing ----------------------------------------------------------------
    def _build_legend(self, names: tuple[str, ...]) -> None:
        """The classes' search, colouring and legend (``_style``)."""
        self._legend_classes = tuple(names)
        completer = QCompleter(list(names), self.find)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.activated.connect(self.pick_class)
        self.find.setCompleter(completer)
        self.find.blockSignals(True)
        self.find.clear()
        self.find.blockSignals(False)
        self.picked = None
        # each class a colour while they can be told apart; else their anatomy's
        depth = max((n.count("/") for n in names), default=0)
        mode = ("class" if len(names) <= LEGEND_LIMIT or not depth
                else "anatomy" if depth >= 2 else "modality")
        for mode_item in range(1, self.colour_by.count()):  # groups need folders
            self.colour_by.model().item(mode_item).setEnabled(depth > 0)
        self.colour_by.blockSignals(True)
        self.colour_by.setCurrentIndex(self.colour_by.findData(mode))
        self.colour_by.blockSignals(False)
        self._style()

    def class_colours(self) -> list[QColor]:
        """Each class's colour as drawn: its own, or its group's."""
        names = self._legend_classes
        mode = self.colour_by.currentData()
        if mode == "class":
            return [class_color(i) for i in range(len(names))]
        return [class_color(g) for g in class_groups(names, GROUP_LEVELS[mode])[1]]

    def _style(self) -> None:
        """Brushes and legend for the colouring chosen and the class picked out; the
        points shown take them at once."""
        colours = self.class_colours()
        self._brushes = []
        for i, colour in enumerate(colours):
            shown = QColor(colour)
            if self.picked is not None and i != self.picked:
                shown.setAlpha(DIMMED)
            self._brushes.append(pg.mkBrush(shown))
        self._write_legend(colours)
        report = self.report
        if report is not None and self._drawn is report:  # restyle what is on show
            coords = self.coordinates()[0]
            labels = report.embedding_labels.astype(int)
            self._draw_points(coords, labels)
            self._ring_wrong(coords, labels,
                             report.embedding_predictions != report.embedding_labels)

    def _write_legend(self, colours: list[QColor]) -> None:
        names = self._legend_classes
        mode = self.colour_by.currentData()
        lines = []
        if self.picked is not None:
            lines.append(f"<b>{_dot(colours[self.picked])} {html.escape(names[self.picked])}"
                         f"</b>{self._picked_count()}")
        if mode == "class" and len(names) <= LEGEND_LIMIT:
            lines += [f"{_dot(c)} {html.escape(short)}"
                      for c, short in zip(colours, short_names(names), strict=True)]
        elif mode == "class":
            lines.append(f"{len(names)} classes, a colour each:<br>hover a point, or find a "
                         "class above")
        else:
            groups, of = class_groups(names, GROUP_LEVELS[mode])
            sizes = np.bincount(of, minlength=len(groups))
            lines += [f"{_dot(class_color(g))} {html.escape(group)} ({sizes[g]})"
                      for g, group in enumerate(groups[:GROUP_LINES])]
            if len(groups) > GROUP_LINES:
                lines.append(f"… {len(groups) - GROUP_LINES} more")
        lines.append("&#9675; misclassified")
        self.legend.setText("<br>".join(lines), color="#222222")

    def _picked_count(self) -> str:
        report = self.report
        if report is None or report.class_names != self._legend_classes:
            return ""
        mine = report.embedding_labels.astype(int) == self.picked
        wrong = int((mine & (report.embedding_predictions != report.embedding_labels)).sum())
        return f": {int(mine.sum())} points, {wrong} misclassified"

    def _find_edited(self, text: str) -> None:
        if not text:  # cleared (its clear button): every class shown again
            self.pick_class("")

    def pick_class(self, text: str) -> bool:
        """Pick out the class named ``text`` (or the one class whose name holds it; case
        aside); "" shows all again. False, with a sentence, when no one class matches."""
        names = self._legend_classes
        text = text.strip()
        if not text:
            found = None
        else:
            exact = [i for i, n in enumerate(names) if n.lower() == text.lower()]
            holding = [i for i, n in enumerate(names) if text.lower() in n.lower()]
            found = (exact or holding)[0] if len(exact or holding) == 1 else None
            if found is None:
                self.status.setText(f"{len(holding)} classes hold “{text}”: type more of one"
                                    if holding else f"no class is named like “{text}”")
                return False
            self.status.setText(" ")
        if found != self.picked:
            self.picked = found
            self._style()
        return True

    def legend_entries(self) -> list[str]:
        """The legend's lines as plain text ('● lung', …, '○ misclassified')."""
        self.flush()
        text = html.unescape(re.sub(r"<[^>]+>", "", self.legend.text.replace("<br>", "\n")))
        return text.split("\n") if text else []

    def coordinates(self) -> tuple[np.ndarray, str]:
        """The coordinates shown and the projection's name."""
        report = self.report
        if self.projection.currentData() == "tsne" and report.epoch in self.tsne_cache:
            return self.tsne_cache[report.epoch], "t-SNE"
        return report.embedding, "PCA"

    def _draw(self) -> None:
        report = self.report
        coords, name = self.coordinates()
        labels = report.embedding_labels.astype(int)
        wrong = report.embedding_predictions != report.embedding_labels
        self._draw_points(coords, labels)
        self._ring_wrong(coords, labels, wrong)
        self._drawn = report
        if self.projection.currentData() == "tsne" and name == "PCA" and self.tsne_cache:
            done = ", ".join(str(e) for e in sorted(self.tsne_cache))
            self.status.setText(f"t-SNE is of epoch {done} only: epoch {report.epoch} is "
                                "shown in PCA")
        self.plot.setTitle(f"Validation embedding ({name}), epoch {report.epoch}: "
                           f"{len(labels)} images, {int(wrong.sum())} misclassified", size="11pt")
        self.plot.enableAutoRange()

    def _draw_points(self, coords, labels) -> None:
        """Every point in its class's brush; the class picked out drawn last (on top),
        larger and outlined."""
        if self.picked is None:
            order = np.arange(len(labels))
            self.points.setData(x=coords[:, 0], y=coords[:, 1], data=order, size=7, pen=None,
                                brush=[self._brushes[c] for c in labels.tolist()])
            return
        mine = labels == self.picked
        order = np.argsort(mine, kind="stable")
        outline, plain = pg.mkPen("k", width=1.5), pg.mkPen(None)
        self.points.setData(x=coords[order, 0], y=coords[order, 1], data=order,
                            brush=[self._brushes[c] for c in labels[order].tolist()],
                            size=np.where(mine[order], 11, 7),
                            pen=[outline if m else plain for m in mine[order].tolist()])

    def drawn_styles(self) -> dict[int, set[tuple[str, int, float]]]:
        """Class -> the (colour, alpha, size) its points are drawn with (tests)."""
        labels = self.report.embedding_labels.astype(int)
        found: dict[int, set] = {}
        for point in self.points.points():
            colour = point.brush().color()
            found.setdefault(int(labels[int(point.data())]), set()).add(
                (colour.name(), colour.alpha(), float(point.size())))
        return found

    def _ring_wrong(self, coords, labels, wrong) -> None:
        """Rings on the misclassified points: those of the class picked out, if any."""
        if self.picked is not None:
            wrong = wrong & (labels == self.picked)
        index = np.flatnonzero(wrong)
        self.wrong_item.setData(x=coords[index, 0], y=coords[index, 1], data=index)

    def misclassified_count(self) -> int:
        """How many points are marked misclassified."""
        return len(self.wrong_item.data)

    def point_count(self) -> int:
        """How many validation points are drawn (each once)."""
        return len(self.points.data)

    def _clicked(self, _item, points, _event=None) -> None:
        if self.report is None or not len(points) or points[0].data() is None:
            return
        self.point_clicked.emit(int(self.report.embedding_indices[int(points[0].data())]))

    def _tip(self, x: float, y: float, data) -> str:
        return "" if data is None else self.describe_point(int(data))

    def describe_point(self, i: int) -> str:
        """The hover text of embedded point ``i``: class, prediction, confidence, file."""
        report = self.report
        if report is None:
            return ""
        names = report.class_names
        true, pred = int(report.embedding_labels[i]), int(report.embedding_predictions[i])
        index = int(report.embedding_indices[i])
        source = self.names[index] if index < len(self.names) else f"validation #{index}"
        mark = "" if true == pred else "  ✗"
        return (f"true: {names[true]}\npredicted: {names[pred]}{mark}\n"
                f"confidence: {report.embedding_confidences[i]:.3f}\nfile: {source}")

    # --- t-SNE ------------------------------------------------------------------
    def _projection_changed(self) -> None:
        if self.report is None:
            return
        if self.projection.currentData() == "tsne" and self.report.epoch not in self.tsne_cache:
            self.compute_tsne()
        self._draw()

    @Slot()
    def compute_tsne(self) -> None:
        """Start t-SNE of the latest epoch's features in a worker thread."""
        if self._tsne is not None or self.feature_source is None:
            if self.feature_source is None:
                self.status.setText("t-SNE needs a run with saved features.")
            return
        features = self.feature_source()
        if features is None:
            self.status.setText("no features saved yet; wait for an epoch to finish.")
            return
        self.status.setText(f"computing t-SNE of {len(features)} points…")
        self.tsne_button.setEnabled(False)
        from olsdesk.core.projection import tsne_2d

        epoch = self.latest_epoch
        self._tsne = start_worker(tsne_2d, features,
                                  returned=lambda coords: self._tsne_done(epoch, coords),
                                  errored=lambda message: self.status.setText(
                                      f"t-SNE failed: {message}"),
                                  finished=self._tsne_finished)

    def _tsne_finished(self) -> None:
        self._tsne = None
        self.tsne_button.setEnabled(True)

    def _tsne_done(self, epoch: int, result) -> None:
        self.tsne_cache[epoch] = np.asarray(result)
        self.status.setText(f"t-SNE of epoch {epoch} ready")
        if self.projection.currentData() != "tsne":
            self.projection.setCurrentIndex(1)  # redraws
        elif self.report is not None:
            self._draw()
        self.tsne_finished.emit(epoch)


def _dot(colour: QColor) -> str:
    return f'<span style="color:{colour.name()}">&#9679;</span>'
