"""The app through its own controls, offscreen: train, panels, pause/stop, close, replay."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGraphicsItem

from olsdesk.core.names import short_names
from olsdesk.core.runs import RunStore
from olsdesk.gui.app import panel_is_blank
from olsdesk.gui.panels.common import class_color
from olsdesk.gui.panels.curves import PLOTS
from tests.gui.conftest import open_run, train


def test_training_through_the_window_fills_every_panel(qtbot, window):
    assert train(qtbot, window) == "finished"
    reports = window.reports
    assert [r.epoch for r in reports] == [1, 2]

    # curves: two points per series
    for attr in ("train_loss", "val_nll", "train_top1", "val_top1", "train_top5", "val_top5",
                 "ece"):
        x, y = window.curves.series_points(attr)
        assert list(x) == [1, 2]
        np.testing.assert_allclose(y, [getattr(r, attr) for r in reports])

    # soft labels: the heatmap shows the chosen epoch's matrix, both kinds (a tab that is
    # not showing draws when it is shown: each panel is looked at as a user would)
    panel = window.soft_labels
    window.tabs.setCurrentWidget(panel)
    np.testing.assert_allclose(panel.shown_matrix(), reports[-1].soft_labels)
    window.scrubber.slider.setValue(1)  # the epoch slider
    np.testing.assert_allclose(panel.shown_matrix(), reports[0].soft_labels)  # uniform start
    panel.matrix_choice.setCurrentIndex(panel.matrix_choice.findData("mean_prediction"))
    np.testing.assert_allclose(panel.shown_matrix(), np.nan_to_num(reports[0].mean_prediction))
    # the default scale is logarithmic, 0.001 to 1; the others 0-1 and the off-diagonal
    matrix = np.nan_to_num(reports[0].mean_prediction)
    off_diagonal = matrix[~np.eye(12, dtype=bool)].max()
    assert panel.colour_levels == pytest.approx((0.001, 1.0))
    panel.scale_choice.setCurrentIndex(panel.scale_choice.findData("off_diagonal"))
    assert panel.colour_levels == pytest.approx((0.0, off_diagonal))
    panel.scale_choice.setCurrentIndex(panel.scale_choice.findData("full"))
    assert panel.colour_levels == (0.0, 1.0)

    # reliability: bars for the non-empty bins of the chosen epoch
    window.tabs.setCurrentWidget(window.reliability)
    filled = int((reports[0].reliability_counts > 0).sum())
    assert window.reliability.bars_shown() == filled
    assert "ECE" in window.reliability.statistics_text()

    # embedding: one point per embedded validation sample
    emb = window.embedding
    window.tabs.setCurrentWidget(emb)
    assert emb.point_count() == len(reports[0].embedding_labels)
    wrong = reports[0].embedding_predictions != reports[0].embedding_labels
    assert emb.misclassified_count() == int(wrong.sum())
    assert "silhouette" in window.embedding.separation.text()

    # the run on disk holds the same epochs
    assert [r.epoch for r in RunStore.load(window.run_path)] == [1, 2]


def test_soft_label_hover_names_both_classes(qtbot, window):
    train(qtbot, window)
    panel = window.soft_labels
    window.tabs.setCurrentWidget(panel)
    qtbot.wait(50)
    scene_pos = panel.plot.vb.mapViewToScene(QPointF(2.5, 1.5))  # row 1 (nodule), col 2 (mass)
    panel.graphics.scene().sigMouseMoved.emit(scene_pos)  # the pointer moves there
    value = panel.current_matrix()[1, 2]
    assert panel.hover.text().startswith(f"true CT/lung/nodule → CT/lung/mass: {value:.3f}")
    assert "correct prediction" in panel.hover.text()  # OLS: what built the row


def test_embedding_hover_tip_and_tsne_off_the_gui_thread(qtbot, window):
    train(qtbot, window)
    panel = window.embedding
    tip = panel.describe_point(0)
    assert tip.startswith("true: ") and "confidence:" in tip and "demo #" in tip
    with qtbot.waitSignal(panel.tsne_finished, timeout=60_000):
        qtbot.mouseClick(panel.tsne_button, Qt.MouseButton.LeftButton)
    assert panel.projection.currentData() == "tsne"
    coords, name = panel.coordinates()
    assert name == "t-SNE" and not np.allclose(coords, window.reports[-1].embedding)
    # an earlier epoch has no t-SNE: the panel says the plot is PCA
    window.tabs.setCurrentWidget(panel)
    window.session.select(1)
    assert panel.coordinates()[1] == "PCA" and "shown in PCA" in panel.status.text()
    # another run opened: the choice and the plot agree again (PCA, its t-SNE unknown)
    assert open_run(qtbot, window, window.run_path)
    assert panel.projection.currentData() == "pca" and panel.coordinates()[1] == "PCA"
    assert "PCA" in panel.plot.titleLabel.text
    # the legend sits beside the plot, not over its points
    assert panel.legend.sceneBoundingRect().left() >= panel.plot.vb.sceneBoundingRect().right()
    # a line a class in its colour, then the ring's meaning
    entries = panel.legend_entries()
    classes = window.reports[-1].class_names
    assert len(entries) == len(classes) + 1 and entries[-1] == "○ misclassified"
    assert entries[:-1] == [f"● {name}" for name in short_names(classes)]
    assert class_color(0).name() in panel.legend.text


def test_pause_resume_and_stop(qtbot, window):
    exp = window.experiment
    exp.epochs.setValue(50)
    exp.batch_size.setValue(4)
    qtbot.mouseClick(exp.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.training and window.run_path is not None, timeout=20_000)
    qtbot.mouseClick(exp.pause_button, Qt.MouseButton.LeftButton)
    assert window.controller.paused and exp.pause_button.text() == "Resume"
    qtbot.wait(300)
    text = window.message.text()
    qtbot.wait(300)
    assert window.message.text() == text  # nothing moves while paused
    qtbot.mouseClick(exp.pause_button, Qt.MouseButton.LeftButton)
    assert not window.controller.paused
    qtbot.mouseClick(exp.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.last_status == "stopped", timeout=20_000)
    assert not window.training and exp.train_button.isEnabled()
    assert json.loads((window.run_path / "run.json").read_text())["status"] == "stopped"
    # says what was kept: a checkpoint only once an epoch has ended
    expected = "no checkpoint was written" if not window.reports else "checkpoint is kept"
    assert expected in window.message.text()


def test_close_while_training_stops_cleanly_and_keeps_the_checkpoint(qtbot, window):
    exp = window.experiment
    exp.epochs.setValue(50)
    qtbot.mouseClick(exp.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(window.reports) >= 1, timeout=60_000)
    thread = window.controller.worker.thread
    window.close()
    assert not thread.isRunning()
    assert (window.run_path / "checkpoints" / "latest.pt").exists()
    assert json.loads((window.run_path / "run.json").read_text())["status"] == "stopped"


def test_error_in_training_becomes_a_message_and_the_app_stays_usable(qtbot, window, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    window.experiment.weights.setText(str(junk))
    assert train(qtbot, window) == "failed"
    assert "junk.pth" in window.experiment.error.text()
    assert window.experiment.train_button.isEnabled()
    window.experiment.weights.clear()
    assert train(qtbot, window) == "finished"


def test_replay_a_run_and_export(qtbot, window, tmp_path):
    train(qtbot, window)
    from olsdesk.gui.main_window import MainWindow

    other = MainWindow(settings=window.settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(other)
    other.experiment.epochs.setValue(9)  # remembered settings, not the run's
    other.experiment.loss.setCurrentIndex(other.experiment.loss.findData("ce"))
    other.status.speed_label.setText("123 img/s")
    assert open_run(qtbot, other, window.run_path)
    # the settings column shows the run's own settings; no speed from another run
    run_config = RunStore(window.run_path).config()
    assert other.experiment.epochs.value() == run_config.epochs == 2
    assert other.experiment.loss.currentData() == run_config.loss == "ols"
    assert other.experiment.image_size.value() == 32
    assert other.status.speed_label.text() == ""
    assert [r.epoch for r in other.reports] == [1, 2]
    np.testing.assert_allclose(other.soft_labels.shown_matrix(), window.reports[-1].soft_labels)
    # a hover read-out is showing when the user exports: it stays out of the picture
    other.resize(1200, 800)
    other.show()
    other.tabs.setCurrentWidget(other.curves)
    qtbot.wait(50)
    curves = other.curves
    plot = curves.plots[0]
    y_low, y_high = plot.vb.viewRange()[1]
    curves._hover(plot.vb.mapViewToScene(QPointF(2, (y_low + y_high) / 2)), plot,
                  PLOTS[0][2], curves.hover_labels[0])
    hover_text = curves.hover_labels[0].textItem.toPlainText()
    assert curves.hover_labels[0].isVisible() and hover_text.startswith("epoch 2")
    plot.autoBtn.show()  # what a hover leaves on a plot: a control, not the figure
    written = other.export(tmp_path / "export")
    out = tmp_path / "export"
    assert plot.autoBtn.isVisible()
    for name in ("curves", "embedding", "reliability"):
        text = (out / f"{name}.svg").read_text()
        # drawn at the screen's scale (not under matrix(0.75, ...)), markers as shapes
        # (not the scatter's pixmap atlas, nor the "A" button, pasted as images)
        assert "matrix(0.75," not in text and "<image" not in text, name
    names = sorted(p.name for p in written)
    assert names == sorted(["curves.png", "curves.svg", "embedding.png", "embedding.svg",
                            "reliability.png", "reliability.svg", "soft_labels.png",
                            "soft_labels.svg", "metrics.csv", "soft_labels.csv",
                            "mean_prediction.csv", "validation_predictions.csv", "report.md"])
    assert curves.hover_labels[0].isVisible()  # back on screen afterwards
    svg = (out / "curves.svg").read_text()
    assert "<svg" in svg and "Loss (validation: NLL)" in svg and hover_text.splitlines()[1] not in svg
    # titles and axes are drawn for the figure as text, not pasted from the screen's
    # pixmap cache (the title is gone from the SVG when they are); the cache is back after
    assert ">epoch<" in svg.replace("\n", "").replace(" ", "") and "accuracy" in svg
    assert plot.getAxis("left").cacheMode() == QGraphicsItem.CacheMode.DeviceCoordinateCache
    # the plots alone, at twice their size on screen: no combo box, no slider
    for name in other.PANELS:
        panel = getattr(other, name)
        image = QImage(str(out / f"{name}.png"))
        scene = panel.graphics.viewRect()
        assert image.width() == int(scene.width() * 2), name
        assert abs(image.height() / image.width() - scene.height() / scene.width()) < 0.01
        assert "<svg" in (out / f"{name}.svg").read_text()[:500]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "ece" in rows[0]
    last = other.session.selected
    with open(out / "soft_labels.csv") as fh:
        matrix = list(csv.reader(fh))
    assert matrix[0][1:] == list(last.class_names)
    np.testing.assert_allclose(np.array([r[1:] for r in matrix[1:]], float),
                               last.soft_labels, atol=1e-6)
    with open(out / "validation_predictions.csv") as fh:
        predictions = list(csv.DictReader(fh))
    info = RunStore(window.run_path).info(names=True)
    assert len(predictions) == len(info.validation_names) == len(last.embedding_indices)
    first = predictions[0]
    assert first["image"] == info.validation_names[int(first["validation_index"])]
    assert first["prediction"] == last.class_names[int(last.embedding_predictions[0])]
    report_md = (out / "report.md").read_text()
    assert window.run_path.name in report_md and "| loss | ols |" in report_md
    # the values used (α's default, the demo's image size), only the settings OLS uses
    assert "| alpha | 0.5 |" in report_md and "| image_size | 32 |" in report_md
    assert "None" not in report_md and "| epsilon |" not in report_md
    assert f"{last.val_top1:.1%}" in report_md and "![curves.png](curves.png)" in report_md
    for name in other.PANELS:
        assert not panel_is_blank(other.render_panel(name)), name
    assert not other.open_run(tmp_path)  # not a run: a message, no crash
    assert "Cannot open" in other.message.text()
    other.close()


def test_choices_are_remembered(qtbot, settings):
    from olsdesk.gui.panels.experiment import ExperimentPanel

    first = ExperimentPanel(settings)
    qtbot.addWidget(first)
    first.model.setCurrentIndex(first.model.findData("resnet18"))
    first.loss.setCurrentIndex(first.loss.findData("ls"))
    first.epsilon.setValue(0.2)
    first.epochs.setValue(7)
    first.save()
    first.shutdown()
    second = ExperimentPanel(settings)
    qtbot.addWidget(second)
    assert second.model.currentData() == "resnet18" and second.loss.currentData() == "ls"
    assert second.epsilon.value() == pytest.approx(0.2) and second.epochs.value() == 7
    assert not second.alpha.isEnabled() and second.epsilon.isEnabled()
    # the settings are kept as the RunConfig's JSON: an automatic image size as null
    assert json.loads(settings.value("experiment/config"))["image_size"] is None
    assert second.config().image_size is None and second.image_size.auto.isChecked()
    second.image_size.setValue(96)
    second.save()
    assert json.loads(settings.value("experiment/config"))["image_size"] == 96
    first.shutdown()
    second.shutdown()


def test_a_settings_file_with_values_out_of_range_still_starts_the_app(qtbot, settings):
    """An unknown model, an image size of 1e11, an epoch count that is text: each raised
    in the settings form and the app did not start. Each falls back to its default; the
    remembered settings that are fine stay."""
    from olsdesk.config import RunConfig
    from olsdesk.gui.panels.experiment import ExperimentPanel

    stored = {"model": "alexnet", "image_size": 10**11, "epochs": "x", "batch_size": -3,
              "loss": "ls", "epsilon": 0.2, "lr": 0.01, "no_such_setting": 1}
    settings.setValue("experiment/config", json.dumps(stored))
    panel = ExperimentPanel(settings)
    qtbot.addWidget(panel)
    config = panel.config()
    defaults = RunConfig()
    assert (config.model, config.image_size, config.epochs, config.batch_size) == (
        defaults.model, defaults.image_size, defaults.epochs, defaults.batch_size)
    assert (config.loss, config.epsilon, config.lr) == ("ls", pytest.approx(0.2), 0.01)
    settings.setValue("experiment/config", "[1, 2")  # not JSON at all: every default
    other = ExperimentPanel(settings)
    qtbot.addWidget(other)
    assert other.config().model == defaults.model
    panel.shutdown()
    other.shutdown()


def test_unavailable_devices_are_disabled(qtbot, settings):
    import torch

    from olsdesk.gui.panels.experiment import ExperimentPanel

    panel = ExperimentPanel(settings)
    qtbot.addWidget(panel)
    cuda_row = panel.device.findData("cuda")
    assert panel.device.model().item(cuda_row).isEnabled() == torch.cuda.is_available()
    assert "auto (" in panel.device.itemText(0)
    panel.shutdown()


def test_without_a_display_the_app_says_what_to_do():
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run([sys.executable, "-m", "olsdesk"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "olsdesk train" in result.stderr and "QT_QPA_PLATFORM=offscreen" in result.stderr
    assert result.stderr.count("\n") == 1


def test_self_test_passes():
    result = subprocess.run([sys.executable, "-m", "olsdesk", "--self-test"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "self-test passed" in result.stdout and "all 7 tabs rendered" in result.stdout


def test_a_second_training_in_the_same_window_starts_from_clean_panels(qtbot, window):
    assert train(qtbot, window) == "finished"
    first = window.run_path
    assert train(qtbot, window) == "finished"
    assert window.run_path != first and [r.epoch for r in window.reports] == [1, 2]


def test_the_wheel_scrolls_the_settings_instead_of_changing_them(qtbot, window):
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    def wheel(widget) -> None:
        centre = QPointF(widget.width() / 2, widget.height() / 2)
        event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                            QPoint(0, -120), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(widget, event)

    exp = window.experiment
    window.setFocus()
    model, lr = exp.model.currentData(), exp.lr.value()
    for box in (exp.model, exp.lr.box):  # the spin box inside the learning-rate field
        wheel(box)
    assert (exp.model.currentData(), exp.lr.value()) == (model, lr)  # unfocused: untouched
    exp.lr.setFocus()
    qtbot.waitUntil(exp.lr.hasFocus, timeout=2000)
    wheel(exp.lr.box)
    assert exp.lr.value() != lr  # a box the user chose takes the wheel as usual


def test_with_several_gpus_the_window_trains_through_torchrun_and_follows_it(
        qtbot, tmp_path, settings, monkeypatch):
    """Two 'GPUs' (gloo CPU processes here): Train starts torchrun as a child process, the
    panels fill from its run folder, and Stop reaches every process through the run."""
    from olsdesk.gui import main_window
    from olsdesk.gui.panels import experiment

    monkeypatch.setattr(experiment, "torch_cuda_count", lambda: 2)
    win = main_window.MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(win)
    exp = win.experiment
    exp.demo_per_class = 6
    exp.set_data("demo")
    exp.epochs.setValue(2)
    exp.image_size.setValue(32)
    exp.device.setCurrentIndex(exp.device.findData("cpu"))
    win.show()
    qtbot.waitUntil(lambda: exp.dataset is not None, timeout=20_000)
    assert exp.gpus.isVisible() and exp.processes == 2
    assert train(qtbot, win, timeout=120_000) == "finished"
    assert [r.epoch for r in win.reports] == [1, 2]
    info = RunStore(win.run_path).info()
    assert info.device.endswith("2 process(es) under torchrun")
    win.close()


def test_closing_while_a_torchrun_run_trains_can_leave_it_training(
        qtbot, tmp_path, settings, monkeypatch):
    from olsdesk.gui import main_window
    from olsdesk.gui.panels import experiment

    monkeypatch.setattr(experiment, "torch_cuda_count", lambda: 2)
    monkeypatch.setattr(main_window.MainWindow, "ask_leave_running", lambda self, job: True)
    win = main_window.MainWindow(settings=settings, runs_dir=tmp_path / "runs")
    qtbot.addWidget(win)
    exp = win.experiment
    exp.set_data("demo")
    exp.demo_per_class = 30
    exp.epochs.setValue(3)
    exp.image_size.setValue(32)
    exp.device.setCurrentIndex(exp.device.findData("cpu"))
    win.show()
    qtbot.waitUntil(lambda: exp.dataset is not None, timeout=20_000)
    qtbot.mouseClick(exp.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.run_path is not None, timeout=60_000)
    job = win.controller.job
    win.close()  # the app closes at once; the processes train on
    assert job.process.wait(timeout=120) == 0
    assert RunStore(job.path).status == "finished"
    assert [m["epoch"] for m in RunStore(job.path).metrics()] == [1, 2, 3]


def test_the_status_line_says_why_train_is_unavailable(qtbot, window, tmp_path):
    from tests.helpers import make_class_folder

    assert window.message.text().startswith("Ready: press Train to train on the demo set")
    one = make_class_folder(tmp_path / "one_class", {"only": 3})
    window.experiment.set_data(str(one))
    qtbot.waitUntil(lambda: "unavailable" in window.message.text(), timeout=20_000)
    assert not window.experiment.train_button.isEnabled()
    assert "only one class" in window.message.text()
    window.experiment.set_data("demo")
    qtbot.waitUntil(lambda: window.message.text().startswith("Ready"), timeout=20_000)
    assert window.experiment.train_button.isEnabled()
