"""The Evaluate tab: the run's checkpoint on its test split, in the worker, with intervals."""

import json

import numpy as np
from PySide6.QtCore import Qt

from olsdesk.core.bootstrap import CLASS_METRICS, SUMMARY_METRICS
from olsdesk.core.evaluation import format_interval
from tests.gui.conftest import train


def test_the_evaluate_tab_shows_test_metrics_per_class_and_the_confusion_matrix(
        qtbot, window, tmp_path):
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
    assert panel.per_class.columnCount() == 2 + len(CLASS_METRICS)
    assert int(panel.per_class.item(0, 1).text()) == int((ev.labels == 0).sum())
    # rows normalised, then counts
    shown = panel.shown_confusion()
    np.testing.assert_allclose(shown.sum(axis=1), 1.0)
    panel.confusion_choice.setCurrentIndex(panel.confusion_choice.findData("counts"))
    counts = panel.shown_confusion() * ev.confusion().max()
    np.testing.assert_allclose(counts, ev.confusion())
    written = {p.name for p in panel.save(tmp_path / "eval")}
    assert {"predictions.csv", "metrics.json", "per_class.csv", "reliability.png"} <= written
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 12


def test_evaluating_a_run_without_a_test_split_says_why(qtbot, window, tmp_path):
    panel = window.evaluation
    panel.evaluate()  # no checkpoint yet
    assert "No checkpoint" in panel.status.text()
    panel.set_checkpoint(tmp_path / "missing.pt")
    with qtbot.waitSignal(panel.finished, timeout=60_000) as blocker:
        panel.evaluate()
    assert "does not exist" in blocker.args[0] and "does not exist" in panel.status.text()
    assert panel.run_button.isEnabled() or panel.busy
