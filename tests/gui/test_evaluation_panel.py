"""The Evaluate tab: the run's checkpoint on its test split, in the worker, with intervals."""

import json

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from olsdesk.core.bootstrap import CLASS_METRICS, SUMMARY_METRICS
from olsdesk.core.conformal import class_coverage
from olsdesk.core.evaluation import RECALIBRATION_METRICS, format_interval
from olsdesk.core.names import pair_name
from tests.gui.conftest import train


def test_the_evaluate_tab_shows_test_metrics_per_class_and_the_confusion_matrix(
        qtbot, window, tmp_path, monkeypatch):
    assert train(qtbot, window) == "finished"
    panel = window.evaluation
    assert "best checkpoint" in panel.model_label.text()
    with qtbot.waitSignal(panel.finished, timeout=120_000) as blocker:
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [""]
    ev = panel.evaluation
    test = window.experiment.dataset.test
    assert len(ev.labels) == len(test) == 12  # 15 % of 6 images, rounded to 1, x 12 classes
    for row, metric in enumerate(SUMMARY_METRICS):
        assert panel.metrics.item(row, 0).text() == format_interval(
            ev.raw.value[metric], ev.raw.interval(metric))
    assert panel.per_class.rowCount() == 12
    assert panel.per_class.columnCount() == 2 + len(CLASS_METRICS) + 2  # set coverage, size
    assert int(panel.per_class.item(0, 1).text()) == int((ev.labels == 0).sum())
    # each class's set coverage, as per_class.csv has it
    coverage, _ = class_coverage(ev.prediction_sets, ev.labels, 12)
    column = 2 + len(CLASS_METRICS)
    assert panel.per_class.item(0, column).text() == f"{coverage[0]:.1%}"
    # the recalibrators: beside raw (temperature first), then any other, side by side
    assert panel.recalibrator.currentData() == "temperature"
    assert panel.compared.columnCount() == 4  # none, temperature, vector, histogram
    row = RECALIBRATION_METRICS.index("nll")
    vector = ev.results()["vector"]
    assert panel.compared.item(row, 2).text() == format_interval(
        vector.value["nll"], vector.interval("nll"))
    panel.recalibrator.setCurrentIndex(panel.recalibrator.findData("vector"))
    assert panel.metrics.horizontalHeaderItem(1).text() == "vector scaling"
    assert panel.metrics.item(SUMMARY_METRICS.index("nll"), 1).text() == format_interval(
        vector.value["nll"], vector.interval("nll"))
    # the risk-coverage curves, one a score, and the familiarity histogram
    assert len(panel.risk_plot.listDataItems()) == len(ev.selective)
    assert len(panel.ood_plot.listDataItems()) == 1  # the test images
    # rows normalised, then counts
    shown = panel.shown_confusion()
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)
    panel.confusion_choice.setCurrentIndex(panel.confusion_choice.findData("counts"))
    counts = panel.shown_confusion() * ev.confusion().max()
    np.testing.assert_allclose(counts, ev.confusion())
    # hovering a cell names both classes and gives its count (its rate when normalised)
    names = ev.class_names
    assert panel.confusion.readout(0, 1) == f"true {names[0]} → {names[1]}: {ev.confusion()[0, 1]}"
    written = {p.name for p in panel.save(tmp_path / "eval")}
    assert {"predictions.csv", "metrics.json", "per_class.csv", "reliability.png",
            "reliability_smooth.png", "risk_coverage.png", "familiarity.png"} <= written
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 12
    # Save files…: the figures drawn here, the tables written in a worker, the same files
    # (the staging folder beside the target is gone once it ends)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(tmp_path / "saved"))
    qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert panel._saving is not None and not panel.save_button.isEnabled()
    assert panel.status.text().startswith("Saving the evaluation to")
    qtbot.waitUntil(lambda: panel._saving is None, timeout=60_000)
    assert panel.status.text().startswith("Wrote predictions.csv, predictions.npz")
    assert panel.save_button.isEnabled()
    assert {p.name for p in (tmp_path / "saved").iterdir()} == written
    assert ((tmp_path / "saved" / "predictions.csv").read_bytes()
            == (tmp_path / "eval" / "predictions.csv").read_bytes())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_evaluating_a_run_without_a_test_split_says_why(qtbot, window, tmp_path):
    panel = window.evaluation
    panel.evaluate()  # no checkpoint yet
    assert "No checkpoint" in panel.status.text()
    panel.set_checkpoint(tmp_path / "missing.pt")
    with qtbot.waitSignal(panel.finished, timeout=60_000) as blocker:
        panel.evaluate()
    assert "does not exist" in blocker.args[0] and "does not exist" in panel.status.text()
    assert panel.run_button.isEnabled() or panel.busy


def test_a_confusion_cell_click_opens_its_images_with_grad_cam(qtbot, window):
    from PySide6.QtCore import QPoint

    assert train(qtbot, window) == "finished"
    panel = window.evaluation
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        panel.evaluate(resamples=50)
    ev, browser = panel.evaluation, panel.browser
    counts = ev.confusion()
    # the most confused pairs, counted afresh from the predictions, largest first
    table = panel.top_confusions
    off = counts - np.diag(np.diag(counts))
    assert table.rowCount() == np.count_nonzero(off) > 0
    listed = [(table.item(r, 0).data(Qt.ItemDataRole.UserRole),
               table.item(r, 0).data(Qt.ItemDataRole.UserRole + 1), int(table.item(r, 1).text()))
              for r in range(table.rowCount())]
    assert [n for *_, n in listed] == sorted(off[off > 0].tolist(), reverse=True)
    assert all(off[t, p] == n for t, p, n in listed)
    t, p, n = listed[0]
    assert table.item(0, 0).toolTip() == f"{ev.class_names[t]} → {ev.class_names[p]}"
    assert table.item(0, 0).text() == pair_name(ev.class_names[t], ev.class_names[p])
    assert table.item(0, 2).text() == f"{n / counts[t].sum():.1%}"
    assert table.horizontalHeaderItem(2).text() == "of class"  # short: the names keep the room
    assert table.horizontalHeaderItem(2).toolTip() == "their share of the true class's test images"
    assert f"of the {off.sum()} errors" in panel.top_note.text()
    # the demo's classes are all as large: no head or tail to show (tests/core for the rest)
    assert ev.frequency["equal_classes"]
    assert "so there is no head or tail" in panel.frequency_note.text()
    table.cellClicked.emit(0, 0)
    assert browser.grid.count() == n and panel.state.selection.cell == (t, p)
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)
    browser.show_cell(*listed[-1][:2])  # as a click on its matrix cell: its row is marked
    assert {i.row() for i in table.selectedItems()} == {len(listed) - 1}
    browser.show_cell(0, 0)  # a diagonal cell is no pair of the list
    assert not table.selectedItems()
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)
    true, predicted = np.unravel_index(np.argmax(counts), counts.shape)
    # a real click on the cell's centre in the plot
    view = panel.confusion.plot.vb
    scene = view.mapViewToScene(pg_point(predicted + 0.5, true + 0.5))
    local = panel.confusion.graphics.mapFromScene(scene)
    qtbot.mouseClick(panel.confusion.graphics.viewport(), Qt.MouseButton.LeftButton,
                     pos=QPoint(local.x(), local.y()))
    expected = ev.rows(int(true), int(predicted))
    assert browser.grid.count() == len(expected) == counts[true, predicted]
    # the list marks the pair clicked in the matrix (none for a diagonal cell)
    marked = {(table.item(r, 0).data(Qt.ItemDataRole.UserRole),
               table.item(r, 0).data(Qt.ItemDataRole.UserRole + 1))
              for r in {i.row() for i in table.selectedItems()}}
    assert marked == ({(true, predicted)} if true != predicted else set())
    assert ev.class_names[true] in browser.title.text()
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)
    assert len(browser.explained) == len(expected)
    assert all(not e.error and e.cam.shape == e.image.shape for e in browser.explained.values())
    confidences = [ev.probabilities()[browser.grid.item(i).data(Qt.ItemDataRole.UserRole)].max()
                   for i in range(browser.grid.count())]
    assert confidences == sorted(confidences, reverse=True)  # most confident first
    assert not browser.picture_shown().isNull()
    from olsdesk.gui.panels.errors import THUMB
    assert browser.grid.visualItemRect(browser.grid.item(0)).height() > THUMB  # room for it
    browser.grid.setCurrentRow(0)
    assert "predicted" in browser.detail.text() and browser.large.pixmap() is not None
    # least confident first, then a class's mistakes from the per-class table
    browser.order.setCurrentIndex(1)
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)
    flipped = [ev.probabilities()[browser.grid.item(i).data(Qt.ItemDataRole.UserRole)].max()
               for i in range(browser.grid.count())]
    assert flipped == sorted(confidences)
    wrong_class = int(np.argmax(counts.sum(axis=1) - np.diag(counts)))
    row = next(r for r in range(panel.per_class.rowCount())
               if panel.per_class.item(r, 0).text() == ev.class_names[wrong_class])
    panel.per_class.cellClicked.emit(row, 0)
    assert browser.grid.count() == counts[wrong_class].sum() - counts[wrong_class, wrong_class]
    assert "misclassified" in browser.title.text()
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)
    # a reliability bin
    browser.bins.activated.emit(1)
    b = browser.bins.itemData(1)
    assert browser.grid.count() == min(len(ev.rows(confidence_bin=b)), 120)
    qtbot.waitUntil(lambda: not browser.busy, timeout=60_000)


def pg_point(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(float(x), float(y))


def test_a_heatmap_cell_opens_its_test_images_once_the_model_is_evaluated(qtbot, window):
    assert train(qtbot, window) == "finished"
    window.soft_labels.cell_clicked.emit(1, 2)  # not evaluated yet: it says how
    assert "evaluate the checkpoint in the Evaluate tab first" in window.message.text()
    panel = window.evaluation
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        panel.evaluate(resamples=20)
    window.soft_labels.cell_clicked.emit(1, 1)
    assert window.tabs.currentWidget() is panel
    ev = panel.evaluation
    assert panel.browser.grid.count() == len(ev.rows(1, 1))
    assert ev.class_names[1] in panel.browser.title.text()
    qtbot.waitUntil(lambda: not panel.browser.busy, timeout=60_000)


def test_a_reliability_bin_opens_its_test_images_once_the_model_is_evaluated(qtbot, window):
    assert train(qtbot, window) == "finished"
    reliability = window.reliability
    window.tabs.setCurrentWidget(reliability)
    qtbot.waitUntil(lambda: reliability.n_bins > 0)

    def click(plot, confidence):  # a real click on the plot, at this confidence
        view = plot.vb.mapViewToScene(pg_point(confidence, plot.vb.viewRange()[1][1] / 2))
        qtbot.mouseClick(reliability.graphics.viewport(), Qt.MouseButton.LeftButton,
                         pos=reliability.graphics.mapFromScene(view))

    n = reliability.n_bins
    click(reliability.diagram, 1 - 0.5 / n)  # not evaluated yet: it says how
    message = window.message.text()
    assert f"images of confidence {(n - 1) / n:.2f}–1.00" in message
    assert "evaluate the checkpoint in the Evaluate tab first" in message
    assert window.tabs.currentWidget() is reliability
    panel = window.evaluation
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        panel.evaluate(resamples=20)
    window.tabs.setCurrentWidget(reliability)
    with qtbot.waitSignal(reliability.bin_clicked) as clicked:
        click(reliability.histogram, 0.97)
    assert clicked.args == [n - 1, n]
    # the test images whose confidence lies in the top bin, in the Evaluate tab's browser
    assert window.tabs.currentWidget() is panel
    ev = panel.evaluation
    top = ev.probabilities().max(axis=1)
    expected = int(((top > (n - 1) / n) & (top <= 1)).sum())
    assert panel.browser.grid.count() == len(ev.rows(confidence_bin=n - 1)) == expected
    assert "confidence" in panel.browser.title.text()
    qtbot.waitUntil(lambda: not panel.browser.busy, timeout=60_000)


def test_the_reliability_tab_switches_to_the_smoothed_curve_with_its_band(qtbot, window):
    assert train(qtbot, window) == "finished"
    panel = window.reliability
    report = window.session.selected or window.reports[-1]
    panel.show_report(report)
    panel.flush()
    assert panel.accuracy_bars.isVisible() and not panel.curve.isVisible()
    panel.smoothed.setChecked(True)
    assert panel.curve.isVisible() and panel.band.isVisible()
    assert not panel.accuracy_bars.isVisible()

    def legend():
        return [label.text for _, label in panel.legend.items]

    assert legend() == ["smoothed accuracy (95 % band)", "perfect calibration"]
    assert f"smooth ECE {report.smooth_ece:.4f}" in panel.statistics_text()
    x, y = panel.curve.getData()
    shown = np.isfinite(report.smooth_accuracy)
    np.testing.assert_allclose(y, np.clip(report.smooth_accuracy[shown], 0, 1))
    low, high = panel.band_low.getData()[1], panel.band_high.getData()[1]
    assert np.all(low <= high)
    panel.smoothed.setChecked(False)
    assert panel.accuracy_bars.isVisible() and "ECE" in panel.statistics_text()
    assert legend() == ["accuracy", "gap to mean confidence", "perfect calibration"]
