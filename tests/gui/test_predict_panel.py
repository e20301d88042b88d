"""Drops into the window (real QDragEnterEvent/QDropEvent), the prediction list, bad input."""

import csv
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QStyleOptionViewItem, QTableWidgetItem

from olsdesk.core.names import short_names
from olsdesk.gui.panels.predict import NOTE, SET
from olsdesk.gui.resources import resource
from tests.gui.conftest import train
from tests.helpers import truncate, write_dicom, write_png

SAMPLES = resource("samples")


def drop(widget, paths):
    """Drag files from a 'file manager' and drop them on ``widget``."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)
    return event


def test_drop_on_the_window_predicts_good_files_and_explains_bad_ones(qtbot, window, tmp_path):
    assert train(qtbot, window) == "finished"
    panel = window.predict
    assert "best checkpoint" in panel.model_label.text()
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "readme.txt").write_text("hello")
    truncate(write_png(bad / "broken.png", rng.integers(0, 255, (64, 64), dtype=np.uint8)))
    write_dicom(bad / "mono1.dcm", rng.integers(0, 3000, (40, 40)).astype(np.uint16),
                photometric="MONOCHROME1")
    write_dicom(bad / "nopix.dcm", None)
    window.tabs.setCurrentWidget(window.curves)
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(window, [SAMPLES / "CT_lung_nodule.png", SAMPLES / "CT_lung_nodule.dcm", bad])
    assert window.tabs.currentWidget() is panel
    assert panel.rows.rowCount() == 6
    by_name = {Path(p.path).name: p for p in panel.predictions}
    assert {n for n, p in by_name.items() if p.ok} == {"CT_lung_nodule.png",
                                                        "CT_lung_nodule.dcm", "mono1.dcm"}
    notes = {panel.rows.index(r, 0).data(): panel.rows.index(r, NOTE).data()
             for r in range(panel.rows.rowCount())}
    assert "not an image" in notes["readme.txt"]
    assert "truncated or corrupt" in notes["broken.png"]
    assert "without pixel data" in notes["nopix.dcm"]

    # sorting by confidence puts the least confident first and failures last, either way
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        panel.table.sortByColumn(2, order)
        values = [panel.predictions[panel.rows.prediction(r)].confidence
                  for r in range(panel.rows.rowCount())]
        finite = [v for v in values if v == v]
        assert finite == sorted(finite, reverse=order == Qt.SortOrder.DescendingOrder)
        assert len(finite) == 3 and all(v != v for v in values[3:])
        assert [panel.rows.index(r, 2).data() for r in range(3)] == [f"{v:.1%}"
                                                                      for v in finite]
    panel.table.sortByColumn(2, Qt.SortOrder.AscendingOrder)

    # selecting a row shows its preview, its prediction set and top-5 bars
    panel.table.selectRow(0)
    assert panel.preview.pixmap() is not None and not panel.preview.pixmap().isNull()
    assert panel.bars_shown() == 5
    first = panel.predictions[panel.rows.index(0, 0).data(Qt.ItemDataRole.UserRole)]
    assert first.prediction_set and first.set_summary() in panel.detail.text()
    assert panel.rows.index(0, SET).data() == str(len(first.prediction_set))
    assert first.set_summary(30) in panel.rows.index(0, SET).data(Qt.ItemDataRole.ToolTipRole)

    # the low-confidence mark follows the threshold
    panel.threshold.setValue(1.0)
    assert len(panel.low_confidence()) == 3
    assert "low confidence" in panel.rows.index(0, NOTE).data()

    out = tmp_path / "predictions.csv"
    panel.export_csv(out)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and sum(1 for r in rows if r["error"]) == 3


def test_a_folder_dropped_on_the_panel_itself(qtbot, window, tmp_path):
    assert train(qtbot, window) == "finished"
    panel = window.predict
    files = sorted(SAMPLES.iterdir())
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(panel, [SAMPLES, files[0]])  # a folder and a file inside it: one row a file
    assert panel.rows.rowCount() == len(files)
    assert all(p.ok for p in panel.predictions)
    # whole names: the file column is as wide as the widest name
    names = [panel.rows.index(r, 0).data() for r in range(panel.rows.rowCount())]
    widest = max(panel.table.fontMetrics().horizontalAdvance(n) for n in names)
    assert panel.table.columnWidth(0) >= widest
    # dropped again: nothing predicted twice; the status counts this drop and the list
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(panel, [files[1]])
    assert panel.rows.rowCount() == len(files)
    assert panel.status.text().startswith("This drop: 0 predicted, 0 could not be read, "
                                          "1 listed already")
    assert f"The list: {len(files)} predicted, 0 unreadable" in panel.status.text()
    # the top-1 column names classes as the other views do, the whole name on hover
    top = panel.rows.index(0, 1)
    full = top.data(Qt.ItemDataRole.ToolTipRole)
    assert full in panel.predictor.class_names and top.data() == short_names(
        panel.predictor.class_names, limit=24)[panel.predictor.class_names.index(full)]
    # files of one name in two folders (000.png in every class folder) are told apart
    for folder in ("tear", "normal"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / files[0].name).write_bytes(files[0].read_bytes())
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(panel, [tmp_path / "tear", tmp_path / "normal"])
    names = sorted(panel.rows.index(r, 0).data() for r in range(panel.rows.rowCount()))
    assert names == sorted([f"{SAMPLES.name}/{files[0].name}", f"tear/{files[0].name}",
                            f"normal/{files[0].name}"] + [f.name for f in files[1:]])
    panel.table.selectRow(next(r for r in range(panel.rows.rowCount())
                               if panel.rows.index(r, 0).data().startswith("tear/")))
    assert f"<b>tear/{files[0].name}</b>" in panel.detail.text()
    # Clear leaves nothing of the files on screen
    panel.table.selectRow(0)
    assert not panel.preview.pixmap().isNull()
    panel.clear()
    assert panel.preview.pixmap().isNull() and panel.detail.text().strip() == ""
    assert panel.rows.rowCount() == 0 and not panel.bars_view.isVisible()


def test_without_a_model_or_with_a_bad_checkpoint_a_sentence_and_nothing_lost(qtbot, window,
                                                                              tmp_path):
    panel = window.predict
    drop(window, [SAMPLES / "CT_lung_nodule.png"])
    assert "No model" in panel.status.text()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    panel.set_checkpoint(junk)
    with qtbot.waitSignal(panel.predictions_finished, timeout=30_000):
        panel.predict_paths([str(SAMPLES / "CT_lung_nodule.png")])
    assert "not an olsdesk checkpoint" in panel.status.text()
    assert window.experiment.train_button.isEnabled()


def test_rows_of_an_earlier_model_are_marked_and_can_be_predicted_again(qtbot, window):
    assert train(qtbot, window) == "finished"
    panel = window.predict
    # the run's best checkpoint, as the window settles on it after training
    qtbot.waitUntil(lambda: "best checkpoint, epoch" in panel.model_label.text(), timeout=10_000)
    qtbot.wait(200)
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        panel.predict_paths([str(SAMPLES / "CT_lung_nodule.png"),
                             str(SAMPLES / "MR_brain_tumor.png")])
    assert panel.stale_rows() == 0 and panel.repredict_button.isHidden()
    first = panel.model_name
    # a newer checkpoint (as when training improves on its best epoch)
    panel.set_checkpoint(window.run_path / "checkpoints" / "latest.pt", "a newer model")
    assert panel.stale_rows() == 2 and not panel.repredict_button.isHidden()
    note = panel.rows.index(0, NOTE)
    assert note.data() == "⟲ earlier model"
    tip = note.data(Qt.ItemDataRole.ToolTipRole)
    assert "previous model" in tip and first in tip
    # a stale row still shows its own model's calibration (that model is gone)
    assert panel.bars_view.isHidden()  # no empty, upside-down chart before a choice
    panel.table.selectRow(0)
    assert not panel.bars_view.isHidden() and panel.bars_shown() > 0
    x_lo, x_hi = panel.bars_view.getPlotItem().vb.viewRange()[0]
    assert x_lo <= 0 and x_hi >= 1  # a 99.6 % mark stays on the chart
    assert panel.table.textElideMode() == Qt.TextElideMode.ElideMiddle  # .dcm vs .png
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        qtbot.mouseClick(panel.repredict_button, Qt.MouseButton.LeftButton)
    assert panel.rows.rowCount() == 2 and panel.stale_rows() == 0
    assert panel.repredict_button.isHidden()
    assert set(panel.models) == {"a newer model"}


def test_a_selected_prediction_shows_its_grad_cam_and_a_stale_one_does_not(qtbot, window,
                                                                          tmp_path):
    assert train(qtbot, window) == "finished"
    panel = window.predict
    qtbot.waitUntil(lambda: "best checkpoint, epoch" in panel.model_label.text(), timeout=10_000)
    broken = truncate(write_png(tmp_path / "broken.png", np.full((40, 40), 90, np.uint8)), 0.3)
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        panel.predict_paths([str(SAMPLES / "CT_lung_nodule.png"), str(broken)])
    good = next(r for r in range(2) if panel.rows.index(r, 0).data() == "CT_lung_nodule.png")
    panel.table.selectRow(good)
    index = panel.rows.prediction(good)
    qtbot.waitUntil(lambda: index in panel.saliency, timeout=30_000)
    explained = panel.saliency[index]
    assert explained.error is None and explained.cam.shape == explained.image.shape
    assert explained.class_index == panel.predictor.class_names.index(
        panel.predictions[index].top_classes[0])
    with_cam = panel.preview.pixmap().toImage()
    assert "Grad-CAM" in panel.preview.toolTip()
    panel.cam_box.setChecked(False)  # the plain thumbnail again
    assert panel.preview.pixmap().toImage() != with_cam and panel.preview.toolTip() == ""
    panel.cam_box.setChecked(True)
    panel.table.selectRow(1 - good)  # the broken file: its sentence, no map asked for
    assert not panel.cam_busy and len(panel.saliency) == 1
    # a row of an earlier model gets no map from the newer one
    panel.saliency.clear()
    panel.set_checkpoint(window.run_path / "checkpoints" / "latest.pt", "a newer model")
    panel.table.selectRow(good)
    qtbot.wait(100)
    assert not panel.cam_busy and not panel.saliency


def test_an_embedding_point_opens_its_file_in_predict_with_grad_cam(qtbot, window):
    assert train(qtbot, window) == "finished"
    embedding = window.embedding
    window.tabs.setCurrentWidget(embedding)
    panel = window.predict
    qtbot.waitUntil(lambda: "best checkpoint, epoch" in panel.model_label.text(), timeout=10_000)
    # the demo's images live in memory: the point's image is written to a PNG and opened
    item = embedding.points
    point = item.points()[0]
    embedding._clicked(item, [point])
    assert window.tabs.currentWidget() is panel
    val = window.experiment.dataset.val
    i = int(embedding.report.embedding_indices[int(point.data())])
    qtbot.waitUntil(lambda: len(panel.predictions) == 1, timeout=30_000)
    written = panel.predictions[0].path
    assert Path(written).name == val.describe(i).replace(" #", "_") + ".png"
    np.testing.assert_array_equal(np.asarray(Image.open(written)), val.images[i])  # lossless
    # predicted as validation predicted it at the best epoch (Predict's checkpoint)
    best = window.session.best
    at = int(np.flatnonzero(best.embedding_indices == i)[0])
    assert panel.predictions[0].top_classes[0] == best.class_names[
        int(best.embedding_predictions[at])]
    # data loaded now that is not the run's: one sentence, nothing opened
    window.experiment.dataset_key = ("another",)
    embedding._clicked(item, [point])
    assert "not the data loaded now" in window.message.text() and len(panel.predictions) == 1
    # a misclassified point's ring lies on top of it: a real click on it opens it too
    window.experiment.dataset_key = None
    window.tabs.setCurrentWidget(embedding)
    window.session.select(1)  # the first epoch: mistakes to click
    qtbot.wait(100)  # drawn, and the view ranged to its points
    assert embedding.misclassified_count() > 0
    ring = embedding.wrong_item.points()[0]
    local = embedding.graphics.mapFromScene(embedding.plot.vb.mapViewToScene(ring.pos()))
    clicked = []
    embedding.point_clicked.connect(clicked.append)
    qtbot.mouseClick(embedding.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=local)
    assert clicked == [int(embedding.report.embedding_indices[int(ring.data())])]
    # a run on files: the point's own file
    sample = str(SAMPLES / "MR_brain_tumor.png")
    info = window.session.info
    window.session.info = dataclasses.replace(
        info, validation_names=(sample, *info.validation_names[1:]))
    embedding.point_clicked.emit(0)
    assert window.tabs.currentWidget() is panel
    qtbot.waitUntil(lambda: any(p.path == sample for p in panel.predictions), timeout=30_000)
    index = next(i for i, p in enumerate(panel.predictions) if p.path == sample)
    selected = panel.table.selectionModel().selectedRows()
    assert selected and panel.rows.prediction(selected[0].row()) == index
    qtbot.waitUntil(lambda: index in panel.saliency, timeout=30_000)


def test_an_image_unlike_the_training_data_is_marked_in_one_sentence(qtbot, window, tmp_path):
    from olsdesk.config import RunConfig
    from olsdesk.core.trainer import Trainer
    from tests.core.test_real_files import real

    cfg = RunConfig(demo_per_class=24, image_size=32, batch_size=16, epochs=2, device="cpu")
    trainer = Trainer(cfg, runs_dir=tmp_path / "runs")
    for _ in trainer.fit():
        pass
    panel = window.predict
    panel.set_checkpoint(trainer.store.checkpoint_path("best.pt"))
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        panel.predict_paths([str(real("CT_small.dcm")), str(SAMPLES / "CT_lung_nodule.png")])
    notes = {panel.rows.index(r, 0).data(): panel.rows.index(r, NOTE)
             for r in range(panel.rows.rowCount())}
    assert notes["CT_small.dcm"].data().startswith("⚠ unlike the training data")
    assert "do not trust this prediction" in notes["CT_small.dcm"].data(
        Qt.ItemDataRole.ToolTipRole)
    assert "unlike" not in notes["CT_lung_nodule.png"].data()
    row = next(r for r in range(panel.rows.rowCount())
               if panel.rows.index(r, 0).data() == "CT_small.dcm")
    panel.table.selectRow(row)
    assert "CT_small.dcm is unlike the training data" in panel.detail.text()


def test_number_cells_sort_by_number_in_qt_and_show_their_text(qtbot):
    """Cells sort by their value (NaN last) through Qt's own comparison, not a Python
    one, and show and size by their formatted text."""

    from olsdesk.gui.panels.common import NumberItem, row_table

    table = row_table(["file", "confidence"], single=True)
    qtbot.addWidget(table)
    assert "__lt__" not in NumberItem.__dict__
    values = [0.5, float("nan"), 0.05, 0.95, 0.123]
    table.setSortingEnabled(False)  # as the panels fill a table
    table.setRowCount(len(values))
    for row, value in enumerate(values):
        table.setItem(row, 0, QTableWidgetItem(f"f{row}"))
        table.setItem(row, 1, NumberItem(value, "—" if value != value else f"{value:.1%}"))
    table.setSortingEnabled(True)
    table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    shown = [table.item(r, 1).text() for r in range(len(values))]
    assert shown == ["5.0%", "12.3%", "50.0%", "95.0%", "—"]  # "5.0%" > "12.3%" as text
    assert [table.item(r, 0).text() for r in range(len(values))] == ["f2", "f4", "f0", "f3",
                                                                     "f1"]
    option = QStyleOptionViewItem()
    table.itemDelegate().initStyleOption(option, table.model().index(0, 1))
    assert option.text == "5.0%"


def test_the_list_model_sorts_keeps_the_selection_and_restyles_without_items(qtbot):
    """The Predict list's model: numbers sorted by value, ties in arrival order and failed
    files last whichever way; the selected row follows its prediction through sorts and
    additions; notes follow the threshold; files of one name show their folder."""
    from PySide6.QtWidgets import QTableView

    from olsdesk.core.predictor import Prediction
    from olsdesk.gui.panels.common import rows_view
    from olsdesk.gui.panels.predict import PredictionRows

    names = ("CT/lung/nodule", "MR/knee/tear")

    def made(path, confidence):
        if confidence != confidence:
            return Prediction(path, error="the file is truncated or corrupt")
        p = np.array([confidence, 1 - confidence])
        top = int(np.argmax(p))
        return Prediction(path, top_classes=(names[top], names[1 - top]),
                          top_probabilities=(p.max(), p.min()), probabilities=p,
                          calibrated_probabilities=p, prediction_set=(names[top],),
                          set_coverage=0.9)

    predictions, models = [], []
    view = rows_view(QTableView(), single=True)
    qtbot.addWidget(view)
    rows = PredictionRows(predictions, models, view)
    rows.restyle(0.5, "m")
    view.setModel(rows)
    view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # as the panel
    view.setSortingEnabled(True)

    def add(*made_ones):
        predictions.extend(made_ones)
        models.extend(["m"] * len(made_ones))
        rows.add(list(made_ones), names)

    # top-1 confidence is max(p, 1 - p): 0.7, failed, 0.95, 0.99, 0.7
    add(made("/d/a.png", 0.7), made("/d/b.png", float("nan")), made("/d/c.png", 0.05),
        made("/d/d.png", 0.99), made("/d/e.png", 0.3))
    assert rows.rowCount() == 5 and [rows.prediction(r) for r in range(5)] == [0, 1, 2, 3, 4]
    view.sortByColumn(2, Qt.SortOrder.AscendingOrder)
    assert [rows.prediction(r) for r in range(5)] == [0, 4, 2, 3, 1]
    assert [rows.index(r, 2).data() for r in range(5)] == ["70.0%", "70.0%", "95.0%",
                                                          "99.0%", "—"]
    view.sortByColumn(2, Qt.SortOrder.DescendingOrder)
    assert [rows.prediction(r) for r in range(5)] == [3, 2, 0, 4, 1]
    assert [rows.index(r, 1).data() for r in range(2)] == short_names(names, limit=24)
    assert rows.index(1, 1).data(Qt.ItemDataRole.ToolTipRole) == "MR/knee/tear"
    view.selectRow(1)  # c.png
    add(made("/d/f.png", 0.999))  # sorted in on arrival: first
    assert rows.prediction(0) == 5
    selected = view.selectionModel().selectedRows()
    assert [rows.prediction(s.row()) for s in selected] == [2]
    view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert [rows.index(r, 0).data() for r in range(6)] == [f"{c}.png" for c in "abcdef"]
    assert [rows.prediction(s.row()) for s in view.selectionModel().selectedRows()] == [2]
    # the threshold: notes and their sort follow it, with one repaint
    assert rows.index(0, NOTE).data() == "" and rows.index(1, NOTE).data() == \
        "the file is truncated or corrupt"
    changed = []
    rows.dataChanged.connect(lambda first, last: changed.append((first.row(), last.row())))
    rows.restyle(0.9, "m")
    assert changed == [(0, 5)]
    assert rows.index(0, NOTE).data() == "⚠ low confidence"
    assert rows.index(0, NOTE).data(Qt.ItemDataRole.ForegroundRole).name() == "#b36b00"
    # a second file of a name: both show their folder
    add(made("/other/a.png", 0.9))
    shown = [rows.index(r, 0).data() for r in range(rows.rowCount())]
    assert shown == sorted(shown) and "a.png" not in shown
    assert rows.index(shown.index("d/a.png"), 0).data(Qt.ItemDataRole.ToolTipRole) == \
        "/d/a.png" and "other/a.png" in shown
    # arrival order again, then nothing
    view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
    assert [rows.prediction(r) for r in range(7)] == list(range(7))
    predictions.clear()
    models.clear()
    rows.clear()
    assert rows.rowCount() == 0
