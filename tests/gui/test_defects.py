"""What a first-time user ran into (#13): axes and counts that read as a person writes
them, Compare tables, the heatmap's scale and readout, embedding colours, start-up."""

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from olsdesk.gui.panels.common import EpochAxis, plural
from olsdesk.gui.panels.curves import PLOTS, CurvesPanel
from olsdesk.gui.widgets import _range_text


def test_the_epoch_axis_ticks_whole_epochs_only(qtbot):
    axis = EpochAxis("bottom")
    for lo, hi in ((0.8, 2.2), (0.5, 1.5), (1.0, 30.0), (1.1, 1.4)):
        for _, values in axis.tickValues(lo, hi, 400):
            assert all(float(v).is_integer() for v in values), (lo, hi, values)


def test_one_epoch_gets_a_readable_y_range(qtbot):
    class One:  # an epoch report whose every number is the same awkward float
        epoch, epochs = 1, 1

        def __getattr__(self, name):
            return 0.5456858317335366

    panel = CurvesPanel()
    qtbot.addWidget(panel)
    panel.set_reports([One()])
    for plot in panel.plots:
        lo, hi = plot.vb.viewRange()[1]
        assert hi - lo >= 0.02 and lo < 0.5456858317335366 < hi
    assert len(panel.plots) == len(PLOTS)


def test_curves_span_the_whole_run_from_its_first_epoch(qtbot):
    class Report:  # epoch e of a ten-epoch run
        epochs = 10

        def __init__(self, epoch):
            self.epoch = epoch

        def __getattr__(self, name):
            return 0.5 + 0.01 * self.epoch

    panel = CurvesPanel()
    qtbot.addWidget(panel)
    ranges = []
    for epoch in (1, 2, 3):
        panel.add_report(Report(epoch))
        panel.flush()  # drawn in the next turn of the event loop
        ranges.append([plot.vb.viewRange()[0] for plot in panel.plots])
    # the epoch axis already shows epochs 1-10 at the first epoch, and never moves
    lo, hi = ranges[0][0]
    assert lo < 1 and 10 < hi < 11 and all(r == ranges[0] for r in ranges)
    # the y range follows the values
    y_lo, y_hi = panel.plots[1].vb.viewRange()[1]
    assert y_lo < 0.51 and 0.53 < y_hi


def test_no_colour_scale_hides_a_matrix_structure(qtbot):
    """A label-smoothing target (every off-diagonal value equal), OLS's first epoch and a
    confusion matrix of 0.05 / 0.9 / 1.0: on every scale the diagonal and the rest get
    different colours, the bar says which scale, and its ticks are distinct values."""
    from olsdesk.gui.panels.soft_labels import SCALES, SoftLabelsPanel

    panel = SoftLabelsPanel()
    qtbot.addWidget(panel)
    panel.set_classes([f"c{i}" for i in range(12)])
    eps = 0.1
    smoothing = np.full((12, 12), eps / 12) + np.eye(12) * (1 - eps)
    confusion = np.zeros((12, 12))
    np.fill_diagonal(confusion, 1.0)
    confusion[0, :2] = (0.9, 0.05)
    confusion[0, 2] = 0.05

    def colours(matrix):
        drawn = panel.image.image
        lo, hi = panel.image.levels
        return np.clip((drawn - lo) / (hi - lo), 0, 1), matrix

    for key, _ in SCALES:
        panel.scale_choice.setCurrentIndex(panel.scale_choice.findData(key))
        panel.show_matrix(smoothing, "LS target", "soft label")
        levels, _ = colours(smoothing)
        off = levels[~np.eye(12, dtype=bool)]
        if key == "off_diagonal":  # the diagonal is left blank, said on the bar
            assert np.isnan(np.diag(levels)).all()
            assert "every off-diagonal value is 0.0083" in panel.colorbar.getAxis("left").labelText
        else:
            assert np.diag(levels).min() - off.max() > 0.5, key
        ticks = [label for _, label in panel.colorbar.axis._tickLevels[0]]
        assert len(set(ticks)) == len(ticks), (key, ticks)
        if key == "log":  # the bar reads in probabilities, not in exponents
            assert ticks == ["0.001", "0.01", "0.1", "1"]
    panel.scale_choice.setCurrentIndex(panel.scale_choice.findData("log"))
    panel.show_matrix(confusion, "confusion", "predicted", values=confusion)
    levels, _ = colours(confusion)
    assert levels[0, 1] < 0.7 < levels[0, 0]  # 0.05 and 0.9 apart
    assert "log scale" in panel.colorbar.getAxis("left").labelText
    # the cells carry their values: 1.00 and 0.90 read apart although close in colour
    assert panel.cell_values()[(0, 0)] == "0.90" and panel.cell_values()[(1, 1)] == "1.00"
    assert (0, 5) not in panel.cell_values()  # zeros stay blank


def test_counts_read_as_words():
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs"
    assert _range_text(200, 200) == "200" and _range_text(150, 210) == "150–210"


def test_compare_tables_write_no_nan_no_lone_plus_minus_and_percent_accuracy():
    from olsdesk.gui.panels.compare import metric_text

    assert metric_text("val_top1", float("nan")) == "—"
    assert metric_text("val_top1", 0.9132) == "91.3 %"
    assert metric_text("val_top1", 0.9132, 0.0064) == "91.3 % ± 0.6 %"
    assert metric_text("ece", 0.0686) == "0.0686"  # one run: no '± 0.0000'
    assert metric_text("ece", 0.0686, 0.0017) == "0.0686 ± 0.0017"


def test_runs_trained_differently_are_named_as_such(tmp_path):
    from olsdesk.config import RunConfig
    from olsdesk.gui.panels.compare import settings_that_differ

    same = [RunConfig(seed=0), RunConfig(seed=1, loss="ce")]
    assert settings_that_differ(same) == []  # seeds and losses are what a study varies
    assert settings_that_differ([RunConfig(epochs=10), RunConfig(epochs=3, image_size=32)]) == [
        "epochs", "image size"]
    # the image size training used, not the field: 'auto' on the demo set is 64
    assert settings_that_differ([RunConfig(), RunConfig(image_size=64)]) == []


def test_the_heatmap_groups_modalities_and_its_readout_never_goes_stale(qtbot):
    import numpy as np
    from PySide6.QtCore import QEvent

    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    class Report:
        epoch, epochs = 1, 2
        class_names = ("CT/lung/normal", "CT/lung/mass", "MR/brain/normal", "US/cyst")
        soft_labels = np.full((4, 4), 0.05) + np.eye(4) * 0.8
        mean_prediction = soft_labels

    panel = SoftLabelsPanel()
    qtbot.addWidget(panel)
    panel.show_report(Report())
    thick, thin = group_lines(panel)
    assert thick == [2, 3] and thin == []  # CT | MR | US
    assert panel.colour_levels == pytest.approx((0.001, 1.0))  # log scale by default
    panel.hover.setText(panel.readout(0, 1))
    assert panel.hover.text().startswith("true CT/lung/normal")
    panel.graphics.leaveEvent(QEvent(QEvent.Type.Leave))
    assert panel.hover.text().strip() == ""
    panel.hover.setText("true …")
    panel.show_report(Report())  # another epoch
    assert panel.hover.text().strip() == ""


def group_lines(panel) -> tuple[list[float], list[float]]:
    """Where the heatmap draws its lines between modalities (2 px) and between anatomies
    (1 px): each a column's line and a row's, at the same class boundary."""
    import pyqtgraph as pg

    found = {}
    for item in panel.group_items:
        if isinstance(item, pg.PlotCurveItem):
            x, y = item.getData()
            half = len(x) // 2  # the columns' lines, then the rows'
            assert np.array_equal(x[:half], y[half:])  # each boundary on both axes
            found[item.opts["pen"].width()] = sorted(set(x[:half].tolist()))
    return found[2], found[1]


def radimagenet_shaped():
    """165 names of RadImageNet's shape: CT 3 anatomies x 10 findings, MR 10 x 10, US 5 x 7."""
    names = tuple(f"{m}/a{a}/finding_{j}" for m, anatomies, findings in
                  (("CT", 3, 10), ("MR", 10, 10), ("US", 5, 7))
                  for a in range(anatomies) for j in range(findings))
    assert len(names) == 165
    return names


def test_the_embedding_at_165_classes_colours_by_anatomy_and_finds_one_class(qtbot):
    from olsdesk.gui.panels.embedding import DIMMED, EmbeddingPanel

    names = radimagenet_shaped()
    rng = np.random.default_rng(0)
    labels = np.arange(1650) % 165
    predicted = np.where(rng.random(1650) < 0.1, (labels + 1) % 165, labels)

    class Report:
        epoch, class_names = 1, names
        embedding = rng.normal(size=(1650, 2))
        embedding_labels, embedding_predictions = labels, predicted
        embedding_indices = np.arange(1650)
        embedding_confidences = np.full(1650, 0.5)
        silhouette, intra_inter_ratio = 0.1, 0.9

    panel = EmbeddingPanel()
    qtbot.addWidget(panel)
    panel.resize(1400, 900)
    panel.show()
    panel.show_report(Report())
    panel.flush()
    assert panel.point_count() == 1650
    # 165 colours cannot be told apart: by anatomy, a legend line each (18 of them)
    assert panel.colour_by.currentData() == "anatomy"
    entries = panel.legend_entries()
    assert entries[:3] == ["● CT/a0 (10)", "● CT/a1 (10)", "● CT/a2 (10)"]
    assert len(entries) == 18 + 1 and entries[-1] == "○ misclassified"
    styles = panel.drawn_styles()
    assert all(len(styles[c]) == 1 for c in range(165))  # a class, one style
    colours = [next(iter(styles[c]))[0] for c in range(165)]
    assert colours[0] == colours[9] != colours[10]  # one anatomy, one colour
    panel.colour_by.setCurrentIndex(panel.colour_by.findData("modality"))
    assert panel.legend_entries() == ["● CT (30)", "● MR (100)", "● US (35)", "○ misclassified"]
    panel.colour_by.setCurrentIndex(panel.colour_by.findData("class"))
    assert len({next(iter(s))[0] for s in panel.drawn_styles().values()}) == 165
    assert len(panel.legend_entries()) == 3  # a sentence, not 165 lines
    # find a class: a part that names many says so; one class's name picks it out
    assert not panel.pick_class("finding_3") and "classes hold" in panel.status.text()
    panel.find.setText("mr/A4/finding_3")
    panel.find.editingFinished.emit()
    picked = names.index("MR/a4/finding_3")
    assert panel.picked == picked
    wrong = int(((labels == picked) & (predicted != labels)).sum())
    assert panel.legend_entries()[0] == f"● MR/a4/finding_3: 10 points, {wrong} misclassified"
    styles = panel.drawn_styles()
    assert {(alpha, size) for _, alpha, size in styles[picked]} == {(255, 11)}
    assert all({(alpha, size) for _, alpha, size in styles[c]} == {(DIMMED, 7)}
               for c in range(165) if c != picked)
    # drawn last, so on top of the dimmed ones
    shown = [int(labels[int(p.data())]) for p in panel.points.points()]
    assert set(shown[-10:]) == {picked}
    assert panel.misclassified_count() == wrong  # its mistakes ringed, no others
    panel.find.clear()  # all shown again
    assert panel.picked is None and panel.misclassified_count() == int((predicted != labels).sum())
    assert all({(alpha, size) for _, alpha, size in s} == {(255, 7)}
               for s in panel.drawn_styles().values())


def test_a_165_class_matrix_zooms_to_readable_cells_and_parts_its_anatomies(qtbot):
    from PySide6.QtCore import QPoint, Qt

    from olsdesk.core.names import short_names
    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    names = radimagenet_shaped()
    counts = np.random.default_rng(0).integers(0, 3, (165, 165)) * (
        np.random.default_rng(1).random((165, 165)) < 0.3)
    panel = SoftLabelsPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    panel.set_classes(names)
    panel.show_matrix(counts / counts.max(), "t", "predicted class", values=counts,
                      value_format="{:d}")
    qtbot.wait(50)
    thick, thin = group_lines(panel)
    assert thick == [30, 130]  # CT | MR | US
    assert thin == [10, 20, *range(40, 130, 10), 137, 144, 151, 158]  # anatomies within
    # 165 columns of 3 px: no values written, until zoomed to 10 x 10 cells
    assert not panel.zoomed() and panel.cell_values() == {}
    panel.plot.vb.setRange(xRange=(40, 50), yRange=(60, 70), padding=0)
    assert panel.zoomed()
    assert panel.cell_values() == {(r, c): str(counts[r, c]) for r in range(60, 70)
                                   for c in range(40, 50) if counts[r, c]}
    assert all(t.isVisible() for t in panel.cell_texts)  # 50 px cells: room for them
    # every row and column in view named: 55 px a class is room for names
    ticks = {axis: dict(panel.plot.getAxis(axis)._tickLevels[0]) for axis in ("left", "bottom")}
    short = short_names(names)
    assert all(ticks["left"][r + 0.5] == short[r] for r in range(60, 70))
    assert all(ticks["bottom"][c + 0.5].replace("\n", "") == short[c] for c in range(40, 50))
    assert panel.readout(63, 41) == f"true {names[63]} → {names[41]}: {counts[63, 41]}"
    # a double-click shows the whole matrix again
    centre = panel.graphics.viewport().rect().center()
    for click in (qtbot.mouseDClick, qtbot.mouseRelease):  # a real one ends released
        click(panel.graphics.viewport(), Qt.MouseButton.LeftButton,
              pos=QPoint(centre.x(), centre.y()))
    assert not panel.zoomed() and panel.cell_values() == {}


def test_class_colours_stay_apart_and_misclassified_points_keep_theirs(qtbot):
    import itertools

    from PySide6.QtCore import Qt

    from olsdesk.gui.panels.common import class_color
    from olsdesk.gui.panels.embedding import EmbeddingPanel

    def distance(a, b):
        return sum((x - y) ** 2 for x, y in zip(a.getRgb()[:3], b.getRgb()[:3],
                                                strict=True)) ** 0.5

    first = [class_color(i) for i in range(14)]  # the palette: clearly different colours
    assert min(distance(a, b) for a, b in itertools.combinations(first, 2)) > 45
    more = [class_color(i) for i in range(165)]  # RadImageNet: no two identical
    assert len({c.name() for c in more}) == 165
    panel = EmbeddingPanel()
    qtbot.addWidget(panel)
    # a ring (no fill) marks a mistake, so the point's class colour shows through
    assert panel.wrong_item.opts["symbol"] == "o"
    assert panel.wrong_item.opts["brush"].style() == Qt.BrushStyle.NoBrush


def test_a_splash_is_on_screen_before_the_heavy_imports(qtbot):
    from PySide6.QtWidgets import QApplication

    from olsdesk.gui.app import show_splash

    splash = show_splash(QApplication.instance())
    assert splash.isVisible() and "loading PyTorch" in splash.message()
    splash.close()


def test_heatmap_tick_labels_never_overlap_even_with_165_classes(qtbot):
    import numpy as np
    from PySide6.QtGui import QFont, QFontMetrics

    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    demo = ("CT/lung/normal", "CT/lung/nodule", "CT/lung/mass", "CT/lung/effusion",
            "MR/brain/normal", "MR/brain/lesion", "MR/brain/tumor", "MR/brain/edema",
            "US/abdomen/normal", "US/abdomen/calcification", "US/abdomen/solid_mass",
            "US/abdomen/cyst")
    radimagenet = tuple(sorted(f"{('CT', 'MR', 'US')[i % 3]}/organ{i // 10}/finding_{i}"
                               for i in range(165)))
    for names, size in ((demo, (1100, 700)), (demo, (520, 420)), (radimagenet, (900, 700))):
        panel = SoftLabelsPanel()
        qtbot.addWidget(panel)
        panel.resize(*size)
        panel.show()
        panel.set_classes(names)
        panel.show_matrix(np.full((len(names),) * 2, 1 / len(names)), "t", "predicted")
        qtbot.wait(50)
        rect = panel.plot.vb.boundingRect()
        (x0, x1), (y0, y1) = panel.plot.vb.viewRange()
        left, bottom = panel.plot.getAxis("left"), panel.plot.getAxis("bottom")
        rows, columns = left._tickLevels[0], bottom._tickLevels[0]
        line = QFontMetrics(left.font()).height()
        row_gap = (rows[1][0] - rows[0][0]) * rect.height() / (y1 - y0)
        assert line <= row_gap + 0.5  # rows do not overlap
        widths = QFontMetrics(bottom.style["tickFont"] or QFont())
        gap = (columns[1][0] - columns[0][0]) * rect.width() / (x1 - x0)
        widest = max(max(widths.horizontalAdvance(p) for p in text.split("\n"))
                     for _, text in columns)
        assert widest < gap  # nor do columns
        if columns[0][1] == "1":  # numbered columns: the rows say which number is which
            assert rows[0][1].startswith("1 ")
        if len(names) == 165:
            assert 20 <= len(rows) < 165 and len(columns) < 165
    panel = SoftLabelsPanel()  # the wide demo heatmap keeps its names
    qtbot.addWidget(panel)
    panel.resize(1400, 800)
    panel.show()
    panel.set_classes(demo)
    qtbot.wait(50)
    wide_demo_columns = [t for _, t in panel.plot.getAxis("bottom")._tickLevels[0]]
    assert "nodule" in wide_demo_columns[1]


def test_file_dialogs_open_in_the_runs_folder_or_where_that_kind_was_last_chosen(
        qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    asked = []

    def fake_open(parent, caption, folder="", *rest):
        asked.append((caption, folder))
        return "", ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda parent, caption, folder="", *rest:
                                     asked.append((caption, folder)) or ""))
    window.runs_dir.mkdir(parents=True, exist_ok=True)
    window.predict.choose_checkpoint()
    assert asked[-1] == ("Load checkpoint", str(window.runs_dir))  # not the working folder
    window.session.reports = [object()]  # something to export
    window.choose_export()
    assert asked[-1] == ("Export to folder", str(window.runs_dir))
    # once a checkpoint was chosen elsewhere, its folder is where the next dialog opens
    elsewhere = tmp_path / "models"
    elsewhere.mkdir()
    window.folders.remember("checkpoint", elsewhere / "best.pt")
    window.predict.choose_checkpoint()
    assert asked[-1][1] == str(elsewhere)
    window.experiment.weights.choose()  # data and weights: the home folder at first
    assert asked[-1][1] == str(Path.home())


def test_a_tab_not_showing_draws_its_epoch_when_shown_and_before_an_export(qtbot, window,
                                                                          tmp_path):
    from tests.gui.conftest import train

    assert train(qtbot, window) == "finished"
    window.tabs.setCurrentWidget(window.curves)
    heatmap = window.soft_labels
    window.session.select(1)  # hidden: nothing drawn yet, the latest drawing kept
    assert heatmap._pending_draw is not None
    window.tabs.setCurrentWidget(heatmap)  # shown: drawn, the chosen epoch's matrix
    assert heatmap._pending_draw is None
    import numpy as np
    np.testing.assert_allclose(heatmap.shown_matrix(), window.reports[0].soft_labels)
    window.tabs.setCurrentWidget(window.curves)
    window.session.select(2)
    assert heatmap._pending_draw is not None
    window.export(tmp_path / "export")  # an export draws what waits first
    assert heatmap._pending_draw is None
    np.testing.assert_allclose(heatmap.shown_matrix(), window.reports[1].soft_labels)


@pytest.mark.parametrize("accuracy, confidence", [(0.55, 0.60), (0.05, 0.08), (0.93, 0.97),
                                                  (0.30, 0.80)])
def test_histogram_line_labels_sit_clear_of_the_bars_and_of_each_other(qtbot, accuracy,
                                                                         confidence):
    from olsdesk.gui.panels.reliability import ReliabilityPanel

    panel = ReliabilityPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 620)
    panel.show()
    counts = np.full(15, 40)  # every bin as tall as the tallest: no gap to hide a label in
    bins = np.linspace(0.5 / 15, 1 - 0.5 / 15, 15)
    panel.show_bins(counts, bins, bins, accuracy, confidence, "ECE 0.05")
    qtbot.wait(50)
    labels = [line.label.sceneBoundingRect() for line in (panel.accuracy_line,
                                                          panel.confidence_line)]
    top_of_bars = panel.histogram.vb.mapViewToScene(QPointF(0.5, float(counts.max()))).y()
    plot = panel.histogram.vb.sceneBoundingRect()
    for rect in labels:
        assert rect.bottom() <= top_of_bars and plot.contains(rect), (rect, top_of_bars)
    assert not labels[0].intersects(labels[1])


def test_the_heatmap_says_how_many_correct_predictions_built_each_ols_row(qtbot):
    import numpy as np

    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    class Report:
        epoch, epochs = 3, 5
        class_names = ("a", "b", "c")
        soft_labels = np.array([[0.8, 0.15, 0.05], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.1, 0.8]])
        mean_prediction = soft_labels
        soft_label_counts = np.array([120.0, 1.0, 7.0])

    panel = SoftLabelsPanel()
    qtbot.addWidget(panel)
    panel.show_report(Report())
    panel.flush()
    assert panel.readout(0, 1).endswith("(row from 120 correct predictions)")
    assert panel.readout(1, 0).endswith("(uniform row: 1 correct prediction, fewer than the "
                                        "minimum)")
    assert panel.counts_plot.isVisible() or not panel.isVisible()
    assert list(panel.counts_bars.opts["width"]) == [120.0, 1.0, 7.0]
    panel.matrix_choice.setCurrentIndex(1)  # the mean prediction: no counts
    panel.flush()
    assert "correct prediction" not in panel.readout(0, 1)


def test_the_data_summary_of_165_classes_is_a_line_an_anatomy_and_the_rarest(qtbot):
    from types import SimpleNamespace

    from olsdesk.gui.widgets import DatasetPreview

    names = [f"{m}/{a}/finding{i}" for m, anatomies in (("CT", 3), ("MR", 8), ("US", 6))
             for a in (f"organ{j}" for j in range(anatomies)) for i in range(10)][:165]
    counts = {n: (100 + i, 20, 20) for i, n in enumerate(names)}
    counts["US/organ5/finding4"] = (3, 1, 1)  # the rarest
    data = SimpleNamespace(per_class_counts=lambda: counts, num_classes=len(names),
                           channels=1, all_warnings=lambda: (), audit=None)
    preview = DatasetPreview()
    qtbot.addWidget(preview)
    preview.show_dataset(data, [])
    text = preview.summary.text()
    assert text.count("<tr>") == 1 + 17  # the header, then CT's 3, MR's 8, US's 6 anatomies
    first = [counts[n] for n in names[:10]]  # CT/organ0, summed by hand
    assert (f"CT/organ0 <span style='color:#666'>(10 classes, 100–109 train a class)</span>"
            f"</td><td align='right'>{sum(c[0] for c in first):,}</td>") in text
    assert "Fewest training images: US/organ5/finding4 3, CT/organ0/finding0 100" in text
    assert "more classes" not in text
    few = dict(list(counts.items())[:12])  # a dozen classes: a class a row, as before
    preview.show_dataset(SimpleNamespace(**{**data.__dict__, "per_class_counts": lambda: few,
                                            "num_classes": 12}), [])
    assert preview.summary.text().count("<tr>") == 13 and "Fewest" not in preview.summary.text()


def test_the_data_summary_shows_a_few_warnings_and_counts_the_rest(qtbot):
    from dataclasses import replace

    from olsdesk.config import RunConfig
    from olsdesk.core.data.sources import open_dataset
    from olsdesk.gui.widgets import DatasetPreview

    preview = DatasetPreview()
    qtbot.addWidget(preview)
    data = open_dataset(RunConfig(demo_per_class=4))
    many = replace(data, warnings=tuple(f"warning number {i}" for i in range(5_000)))
    preview.show_dataset(many, [])
    text = preview.summary.text()
    assert text.count("⚠") == DatasetPreview.MAX_WARNINGS
    assert "warning number 7" in text and "warning number 8" not in text
    assert f"… and {5_000 - DatasetPreview.MAX_WARNINGS + len(data.all_warnings()):,} more " \
           "warnings" in text


def test_the_compare_legend_of_50_runs_scrolls_above_the_plots(qtbot, tmp_path):
    from types import SimpleNamespace

    from olsdesk.gui.panels.compare import LEGEND_LINES, ComparePanel

    panel = ComparePanel(tmp_path)
    qtbot.addWidget(panel)
    panel.resize(1400, 900)
    panel.show()
    bins = {"reliability_counts": [3, 0, 5], "reliability_confidence": [0.2, 0.5, 0.9],
            "reliability_accuracy": [0.1, 0.5, 0.8]}
    runs = [SimpleNamespace(epoch=e, val_top1=0.5 + 0.01 * e, ece=0.05, **bins)
            for e in (1, 2, 3)]
    panel.draw({"ce-s1": runs, "ols-s1": runs})
    qtbot.waitUntil(lambda: not panel.busy)
    box = panel.legend_box
    few = box.height()
    assert few < 2.5 * panel.legend.fontMetrics().lineSpacing()  # two runs: one line
    names = {f"resnet50-ols-alpha0.{i:02d}-seed{i}": runs for i in range(50)}
    panel.draw(names)
    qtbot.waitUntil(lambda: not panel.busy)
    assert panel.legend.text().count("━━") == 50 and panel.curve_count() == 50
    # 50 names wrap to many lines: the box grows to LEGEND_LINES high and the rest
    # scrolls (the layout settles on the event loop, after the text changed)
    qtbot.waitUntil(lambda: panel.legend.height() > box.height() > few)
    assert box.height() <= panel.legend.fontMetrics().lineSpacing() * LEGEND_LINES + 6
    assert box.geometry().bottom() <= panel.curves.geometry().top()
    assert panel.curves.height() > 400


def test_confusion_matrix_png_of_165_classes_names_every_row(qtbot):
    from olsdesk.gui.figures import CELL_PIXELS, confusion_size
    from olsdesk.gui.panels.soft_labels import SoftLabelsPanel

    assert confusion_size(12) == (1000, 800)  # every cell can carry its count
    names = radimagenet_shaped()
    panel = SoftLabelsPanel()
    qtbot.addWidget(panel)
    panel.hide_controls()
    panel.resize(*confusion_size(len(names)))
    panel.show()
    panel.set_classes(names)
    panel.show_matrix(np.eye(165), "t", "predicted class")
    qtbot.wait(50)
    rows = panel.plot.getAxis("left")._tickLevels[0]
    assert len(rows) == 165 and rows[40][1].endswith(names[40].split("/")[-1])
    cell = panel.plot.vb.boundingRect().height() / 165
    assert CELL_PIXELS * 0.9 <= cell <= CELL_PIXELS * 1.1


def test_the_status_says_when_the_model_compiles(qtbot):
    from olsdesk.core.report import BatchProgress
    from olsdesk.gui.widgets import TrainingStatus

    status = TrainingStatus()
    qtbot.addWidget(status)
    status.progressed(BatchProgress(1, 3, "compile", 0, 40, float("nan"), 0.0, 2.0))
    assert "compiling the model" in status.message.text() and status.speed_label.text() == ""
    assert status.epoch_progress.value() == 0
    status.progressed(BatchProgress(1, 3, "train", 1, 40, 2.3, 50.0, 70.0))
    assert status.message.text() == "Epoch 1/3: training batch 1/40, loss 2.3000"
