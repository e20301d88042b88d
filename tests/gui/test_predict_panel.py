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
    assert panel.table.rowCount() == 6
    by_name = {Path(p.path).name: p for p in panel.predictions}
    assert {n for n, p in by_name.items() if p.ok} == {"CT_lung_nodule.png",
                                                        "CT_lung_nodule.dcm", "mono1.dcm"}
    notes = {panel.table.item(r, 0).text(): panel.table.item(r, NOTE).text()
             for r in range(panel.table.rowCount())}
    assert "not an image" in notes["readme.txt"]
    assert "truncated or corrupt" in notes["broken.png"]
    assert "without pixel data" in notes["nopix.dcm"]

    # sorting by confidence puts the least confident first and failures last
    panel.table.sortItems(2, Qt.SortOrder.AscendingOrder)
    values = [panel.table.item(r, 2).value for r in range(panel.table.rowCount())]
    finite = [v for v in values if v == v]
    assert finite == sorted(finite) and all(v != v for v in values[len(finite):])

    # selecting a row shows its preview, its prediction set and top-5 bars
    panel.table.selectRow(0)
    assert panel.preview.pixmap() is not None and not panel.preview.pixmap().isNull()
    assert panel.bars_shown() == 5
    first = panel.predictions[panel.table.item(0, 0).data(Qt.ItemDataRole.UserRole)]
    assert first.prediction_set and first.set_summary() in panel.detail.text()
    assert panel.table.item(0, SET).text() == str(len(first.prediction_set))
    assert first.set_summary(30) in panel.table.item(0, SET).toolTip()

    # the low-confidence mark follows the threshold
    panel.threshold.setValue(1.0)
    assert len(panel.low_confidence()) == 3
    assert "low confidence" in panel.table.item(0, NOTE).text()

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
    assert panel.table.rowCount() == len(files)
    assert all(p.ok for p in panel.predictions)
    # whole names: the file column is as wide as the widest name
    names = [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())]
    widest = max(panel.table.fontMetrics().horizontalAdvance(n) for n in names)
    assert panel.table.columnWidth(0) >= widest
    # dropped again: nothing predicted twice; the status counts this drop and the list
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(panel, [files[1]])
    assert panel.table.rowCount() == len(files)
    assert panel.status.text().startswith("This drop: 0 predicted, 0 could not be read, "
                                          "1 listed already")
    assert f"The list: {len(files)} predicted, 0 unreadable" in panel.status.text()
    # the top-1 column names classes as the other views do, the whole name on hover
    top = panel.table.item(0, 1)
    assert top.toolTip() in panel.predictor.class_names and top.text() == short_names(
        panel.predictor.class_names, limit=24)[panel.predictor.class_names.index(top.toolTip())]
    # files of one name in two folders (000.png in every class folder) are told apart
    for folder in ("tear", "normal"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / files[0].name).write_bytes(files[0].read_bytes())
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        drop(panel, [tmp_path / "tear", tmp_path / "normal"])
    names = sorted(panel.table.item(r, 0).text() for r in range(panel.table.rowCount()))
    assert names == sorted([f"{SAMPLES.name}/{files[0].name}", f"tear/{files[0].name}",
                            f"normal/{files[0].name}"] + [f.name for f in files[1:]])
    panel.table.selectRow(next(r for r in range(panel.table.rowCount())
                               if panel.table.item(r, 0).text().startswith("tear/")))
    assert f"<b>tear/{files[0].name}</b>" in panel.detail.text()
    # Clear leaves nothing of the files on screen
    panel.table.selectRow(0)
    assert not panel.preview.pixmap().isNull()
    panel.clear()
    assert panel.preview.pixmap().isNull() and panel.detail.text().strip() == ""
    assert panel.table.rowCount() == 0 and not panel.bars_view.isVisible()


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
    note = panel.table.item(0, NOTE)
    assert note.text() == "⟲ earlier model"
    assert "previous model" in note.toolTip() and first in note.toolTip()
    # a stale row still shows its own model's calibration (that model is gone)
    assert panel.bars_view.isHidden()  # no empty, upside-down chart before a choice
    panel.table.selectRow(0)
    assert not panel.bars_view.isHidden() and panel.bars_shown() > 0
    x_lo, x_hi = panel.bars_view.getPlotItem().vb.viewRange()[0]
    assert x_lo <= 0 and x_hi >= 1  # a 99.6 % mark stays on the chart
    assert panel.table.textElideMode() == Qt.TextElideMode.ElideMiddle  # .dcm vs .png
    with qtbot.waitSignal(panel.predictions_finished, timeout=60_000):
        qtbot.mouseClick(panel.repredict_button, Qt.MouseButton.LeftButton)
    assert panel.table.rowCount() == 2 and panel.stale_rows() == 0
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
    good = next(r for r in range(2) if panel.table.item(r, 0).text() == "CT_lung_nodule.png")
    panel.table.selectRow(good)
    index = panel.table.item(good, 0).data(Qt.ItemDataRole.UserRole)
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
    assert selected and panel.table.item(selected[0].row(), 0).data(
        Qt.ItemDataRole.UserRole) == index
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
    notes = {panel.table.item(r, 0).text(): panel.table.item(r, NOTE)
             for r in range(panel.table.rowCount())}
    assert notes["CT_small.dcm"].text().startswith("⚠ unlike the training data")
    assert "do not trust this prediction" in notes["CT_small.dcm"].toolTip()
    assert "unlike" not in notes["CT_lung_nodule.png"].text()
    row = next(r for r in range(panel.table.rowCount())
               if panel.table.item(r, 0).text() == "CT_small.dcm")
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
