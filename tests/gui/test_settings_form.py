"""The settings form is generated from RunConfig: every field, the ranges validated()
enforces, and Train on an opened run repeats it exactly."""

import json
from dataclasses import fields

import pytest
from PySide6.QtWidgets import QFileDialog

from olsdesk.config import RunConfig, in_bounds
from olsdesk.core.runs import RunStore
from olsdesk.gui.settings_form import NumberField, spin_range
from tests.gui.conftest import train
from tests.gui.test_state import menu_action


def test_the_form_has_a_widget_for_every_setting_but_the_data(qtbot, settings):
    from olsdesk.gui.panels.experiment import ExperimentPanel

    panel = ExperimentPanel(settings)
    qtbot.addWidget(panel)
    assert set(panel.setting_widgets()) == {f.name for f in fields(RunConfig)} - {
        "data", "split_csv"}
    panel.shutdown()


def test_start_from_imagenet_says_whether_the_file_is_cached_and_where_it_belongs(
        qtbot, settings, tmp_path, monkeypatch):
    import torch
    from torchvision.models import resnet18

    from olsdesk.gui.panels.experiment import ExperimentPanel

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    panel = ExperimentPanel(settings)
    qtbot.addWidget(panel)
    panel.model.setValue("resnet18")
    panel.weights.imagenet.click()
    assert panel.state.config.weights == "imagenet"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    hint = panel.weights_hint.text()
    assert "resnet18-f37072fd.pth missing" in hint and str(cache) in hint
    cache.mkdir(parents=True)
    torch.save(resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    panel.model.setValue("resnet50")
    assert "resnet50-" in panel.weights_hint.text()  # another model, another file
    panel.model.setValue("resnet18")
    assert panel.weights_hint.text() == "ImageNet (torchvision): resnet18-f37072fd.pth cached ✓"
    panel.model.setValue("smallcnn")
    assert "no ImageNet weights for the small CNN" in panel.weights_hint.text()
    panel.weights.clear()
    assert panel.weights_hint.text() == "" and panel.state.config.weights is None
    panel.shutdown()


@pytest.mark.parametrize("name", [f.name for f in fields(RunConfig)
                                  if f.metadata["bounds"] is not None])
def test_every_value_a_box_offers_passes_validation_and_none_beyond(qtbot, name):
    box = NumberField(name)
    qtbot.addWidget(box)
    lo, hi = spin_range(name)
    assert (box.minimum(), box.maximum()) == (lo, hi)
    assert in_bounds(name, lo) and in_bounds(name, hi)
    meta = RunConfig.__dataclass_fields__[name].metadata
    b_lo, b_hi = meta["bounds"]
    # the box stops at the bounds (or one shown step inside an open end), never outside
    assert b_lo <= lo and hi <= b_hi
    extra = {"image_size": {}, "alpha": {"loss": "ols"}}.get(name, {})
    RunConfig(**{name: box.value() if name != "image_size" else 32}, **extra).validated()


def test_only_the_settings_a_loss_uses_are_editable(qtbot, settings):
    from olsdesk.gui.panels.experiment import ExperimentPanel

    panel = ExperimentPanel(settings)
    qtbot.addWidget(panel)
    for loss, live in (("ce", set()), ("ls", {"epsilon"}), ("tfkd", {"alpha", "temperature"}),
                       ("ols", {"alpha", "ols_init"})):
        panel.loss.setValue(loss)
        assert {n for n in ("alpha", "epsilon", "temperature", "ols_init")
                if panel.setting_widgets()[n].isEnabled()} == live, loss
    panel.loss.setValue("tfkd")
    assert panel.alpha.value() == pytest.approx(0.95)  # the loss's own default α
    assert panel.config().alpha is None
    # 'auto' shows the size it means on this data, and stays auto
    size = panel.setting_widgets()["image_size"]
    size.setValue(None)
    assert size.auto.isChecked() and size.box.value() == 64 and panel.config().image_size is None
    panel.state.edit_config(data="/some/folder")
    assert size.box.value() == 224 and panel.config().image_size is None
    panel.state.edit_config(data="demo")
    panel.optimizer.setValue("adamw")
    assert not panel.momentum.isEnabled()
    panel.optimizer.setValue("sgd")
    assert panel.momentum.isEnabled()
    panel.shutdown()


def test_open_a_run_and_press_train_repeats_it_exactly(qtbot, window, monkeypatch):
    exp = window.experiment
    unusual = {"split_seed": 3, "val_fraction": 0.2, "test_fraction": 0.2,
               "weight_decay": 0.002, "ols_init": "zeros", "amp": False,
               "calibration_bins": 10, "embedding_samples": 50, "seed": 5, "alpha": 0.3}
    for name, value in unusual.items():
        exp.setting_widgets()[name].setValue(value)
    assert train(qtbot, window) == "finished"
    first = window.run_path
    first_config = RunStore(first).config()
    for name, value in unusual.items():
        assert getattr(first_config, name) == pytest.approx(value), name
    # another session, other remembered settings: open the run, press Train
    exp.epochs.setValue(7)
    exp.loss.setValue("ce")
    exp.setting_widgets()["split_seed"].setValue(11)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(first))
    menu_action(window, "Open run…").trigger()
    qtbot.waitUntil(lambda: not window.session.loading, timeout=60_000)
    assert exp.epochs.value() == 2 and exp.loss.value() == "ols"
    assert train(qtbot, window) == "finished"
    second = window.run_path
    assert second != first
    a = json.loads((first / "config.json").read_text())
    b = json.loads((second / "config.json").read_text())
    assert a == b
