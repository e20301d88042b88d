"""One path from file to tensor: training, validation and prediction see the same input.

A large PNG, a JPEG and a DICOM are each read with a read-time reduction; the tensor the
trainer's validation feeds the model must equal, bit for bit, the tensor the predictor
feeds it, and a run's stored validation confidence must equal ``olsdesk predict``'s.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from olsdesk.cli import main
from olsdesk.config import RunConfig
from olsdesk.core.predictor import Predictor
from olsdesk.core.runs import RunStore
from olsdesk.core.trainer import Trainer
from tests.helpers import write_dicom


def _scan(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth random picture with fine noise: detail at every scale, like a scan."""
    coarse = rng.random((8, 8))
    image = np.kron(coarse, np.ones((side // 8 + 1, side // 8 + 1)))[:side, :side]
    return np.clip(image + rng.normal(0, 0.05, (side, side)), 0, 1)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Three classes, one file kind each: 1800 px PNGs, 1200 px JPEGs, 600 px DICOMs."""
    root = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(3)
    for i in range(4):
        (root / "png").mkdir(exist_ok=True)
        Image.fromarray((_scan(rng, 1800) * 255).astype(np.uint8)).save(root / "png" / f"{i}.png")
        (root / "jpeg").mkdir(exist_ok=True)
        Image.fromarray((_scan(rng, 1200) * 255).astype(np.uint8)).save(
            root / "jpeg" / f"{i}.jpg", quality=90)
        (root / "dicom").mkdir(exist_ok=True)
        write_dicom(root / "dicom" / f"{i}.dcm", (_scan(rng, 600) * 4000).astype(np.uint16),
                    slope=1.0, intercept=-1024.0, window=(976, 2000))
    return root


@pytest.fixture(scope="module")
def trained(scans, tmp_path_factory):
    config = RunConfig(data=str(scans), image_size=32, batch_size=4, epochs=1, device="cpu",
                       val_fraction=0.5, num_workers=0)
    trainer = Trainer(config, runs_dir=tmp_path_factory.mktemp("runs"))
    list(trainer.fit())
    return trainer


def test_each_file_is_read_reduced_and_the_reduction_is_recorded(trained):
    preprocessing = RunStore(trained.store.path).info().preprocessing
    assert preprocessing.decode_min_side == 2 * preprocessing.resize_size == 74
    for path in trained.dataset.val.paths:
        side = min(preprocessing.read(path).shape[:2])
        assert 74 <= side < 2 * 74, (path, side)


def test_validation_and_prediction_feed_the_model_the_same_tensor(trained):
    val = trained.dataset.val
    fed_in_validation = {}
    for images, _, indices, failed in trained.val_loader:
        assert not failed
        for image, index in zip(images, indices.tolist(), strict=True):
            fed_in_validation[val.paths[index]] = image
    assert {p.rsplit(".", 1)[1] for p in fed_in_validation} == {"png", "jpg", "dcm"}

    predictor = Predictor.from_checkpoint(trained.store.checkpoint_path(), device="cpu")
    fed_in_prediction = []
    predictor.model.backbone.register_forward_pre_hook(  # the network's first layers
        lambda module, args: fed_in_prediction.append(args[0].clone()))
    paths = list(fed_in_validation)
    predictor.predict(paths, batch_size=1)
    assert len(fed_in_prediction) == len(paths)
    for path, tensor in zip(paths, fed_in_prediction, strict=True):
        assert torch.equal(tensor[0], fed_in_validation[path]), path
        assert torch.equal(predictor.preprocessing.load(path), fed_in_validation[path]), path


def test_training_validation_prediction_and_grad_cam_run_the_model_in_one_layout(trained):
    """core.device.memory_format: channels-last on the CPU (a CPU convolution in another
    layout takes another algorithm, so another rounding), for the weights and for every
    batch, with its standard strides (a one-channel batch's are ambiguous)."""
    from olsdesk.core.saliency import iter_explain

    layout = torch.channels_last
    val = trained.dataset.val
    images = next(trained._on_device(trained.val_loader))[0]
    standard = torch.empty(images.shape, memory_format=layout).stride()
    assert images.stride() == standard
    predictor = Predictor.from_checkpoint(trained.store.checkpoint_path(), device="cpu")
    for model in (trained.model, predictor.model):
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert weights and all(w.is_contiguous(memory_format=layout) for w in weights)
    fed = []
    predictor.model.backbone.register_forward_pre_hook(
        lambda module, args: fed.append(args[0].stride()))
    predictor.predict(val.paths[:4], batch_size=4)  # also what evaluate feeds it
    list(iter_explain(predictor, val, [(i, i, 0) for i in range(4)], batch_size=4))
    assert fed == [standard, standard]


def test_a_checkpoint_holds_its_tensors_in_the_standard_layout(trained):
    """Training ran channels-last, the file does not: the same layout whatever the device,
    and a script's .view() of a loaded weight works. (Loading copies the weights into the
    model's own layout: the predictor's are channels-last, the test above; a resume goes
    on as if never interrupted, tests/core/test_trainer.py.)"""
    trained_weights = [m.weight for m in trained.model.modules()
                       if isinstance(m, torch.nn.Conv2d)]
    assert not all(w.is_contiguous() for w in trained_weights)  # channels-last in training
    state = torch.load(trained.store.checkpoint_path(), map_location="cpu", weights_only=True)
    weights = [t for t in _tensors(state["model"]) if t.dim() == 4]
    moments = [t for t in _tensors(state["optimizer"]) if t.dim() == 4]  # Adam's two a weight
    assert len(weights) == len(trained_weights) and len(moments) == 2 * len(weights)
    assert all(t.is_contiguous() for part in ("model", "optimizer")
               for t in _tensors(state[part]))
    for weight in weights:
        weight.view(-1)  # fails on a channels-last tensor


def _tensors(state) -> list:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        state = list(state.values())
    return [t for value in state for t in _tensors(value)] if isinstance(state, list) else []


def test_stored_validation_confidence_equals_olsdesk_predict(trained, capsys):
    store = RunStore(trained.store.path)
    report = store.load_reports()[-1]
    names = store.info(names=True).validation_names
    stored = {names[i]: float(c) for i, c in
              zip(report.embedding_indices, report.embedding_confidences, strict=True)}
    assert len(stored) == len(names) == 6
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(store.checkpoint_path()), *stored, "--json",
                 "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == list(stored)
    for row in rows:
        assert row["top_probabilities"][0] == pytest.approx(stored[row["path"]], abs=2e-6)


@pytest.mark.parametrize("shape", [(224, 224), (200, 240), (300, 300), (512, 180)])
def test_the_resize_is_the_antialiased_one_whatever_the_shortcut(shape):
    """Enlarging skips the antialiasing kernel (2.5x faster): the tensor must still be the
    antialiased resize to float rounding, so older checkpoints see the same inputs."""
    import torch.nn.functional as F

    from olsdesk.core.data.transforms import Preprocessing

    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    prep = Preprocessing.for_size(224, 1)
    got = prep(image, train=False)
    reference = F.interpolate(torch.from_numpy(image)[None, None], size=(256, 256),
                              mode="bilinear", antialias=True, align_corners=False)[0]
    reference = (reference[:, 16:240, 16:240] - 0.5) / 0.5
    assert torch.allclose(got, reference, atol=5e-7, rtol=0)


def test_under_mixed_precision_validation_and_predict_compute_the_same_confidence(
        scans, tmp_path, capsys, monkeypatch):
    """#23 item 2: the trainer's validation and ``olsdesk predict`` follow one precision
    rule (core.device.amp_dtype). Mixed precision is turned on for the CPU here (it is on
    CUDA by default): the stored confidences, computed under bf16 autocast, are
    predict's to 1e-5; a float32 pass over the same weights misses them by more than
    three times that (the check above would catch a pass in the other precision)."""
    import olsdesk.core.device as device

    monkeypatch.setattr(device, "AMP_DEVICES", ("cuda", "cpu"))
    config = RunConfig(data=str(scans), image_size=32, batch_size=4, epochs=1, device="cpu",
                       val_fraction=0.5, num_workers=0, amp=True)
    trainer = Trainer(config, runs_dir=tmp_path)
    report = [r for r in trainer.fit() if hasattr(r, "val_top1")][-1]
    store = RunStore(trainer.store.path)
    names = store.info(names=True).validation_names
    stored = {names[i]: float(c) for i, c in
              zip(report.embedding_indices, report.embedding_confidences, strict=True)}
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(store.checkpoint_path()), *stored, "--json",
                 "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row in rows:
        assert row["top_probabilities"][0] == pytest.approx(stored[row["path"]], abs=1e-5)
    monkeypatch.setattr(device, "AMP_DEVICES", ("cuda",))  # the same weights in float32
    predictor = Predictor.from_checkpoint(store.checkpoint_path(), device="cpu")
    full = {p.path: p.top_probabilities[0] for p in predictor.predict(list(stored))}
    assert max(abs(full[name] - c) for name, c in stored.items()) > 3e-5

