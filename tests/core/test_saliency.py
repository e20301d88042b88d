"""Grad-CAM against a hand-computed map and against autograd without hooks."""

import numpy as np
import pytest
import torch
from torch import nn

from olsdesk.core.data.sources import FileSamples
from olsdesk.core.models import Classifier, build_model
from olsdesk.core.saliency import cam_layer, grad_cam, iter_explain, overlay
from tests.helpers import truncate, write_png


def test_the_map_of_a_model_small_enough_to_compute_by_hand():
    # A = relu(conv1x1(x)) with filters +1 and -1: A0 = relu(x), A1 = relu(-x); the logits
    # are W @ mean(A) + b, so dlogit_c/dA_k = W[c, k] / 16 everywhere on a 4 x 4 map, and
    # the map is relu(W[c,0]/16 A0 + W[c,1]/16 A1), scaled to a maximum of 1.
    conv = nn.Conv2d(1, 2, 1, bias=False)
    head = nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        head.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]]))
        head.bias.zero_()
    model = Classifier(nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                       head, 2)
    x = np.array([[0.0, 1, 2, -1], [-2, 3, 0.5, -0.5], [1, -3, 2, 0], [0, 0, -1, 4]])
    a0, a1 = np.maximum(x, 0), np.maximum(-x, 0)
    w = head.weight.detach().numpy()
    maps, logits = grad_cam(model, torch.tensor(x, dtype=torch.float32)[None, None].repeat(3, 1, 1, 1),
                            [0, 1, 2])
    for c in range(3):
        expected = np.maximum(w[c, 0] / 16 * a0 + w[c, 1] / 16 * a1, 0)
        np.testing.assert_allclose(maps[c], expected / expected.max(), atol=1e-6)
    assert not np.allclose(maps[0], maps[1])  # each class its own evidence
    np.testing.assert_allclose(logits[0], w @ np.array([a0.mean(), a1.mean()]), atol=1e-6)


def _maps_without_hooks(model, x, classes, layer):
    """The same map through explicit autograd: run the backbone up to ``layer`` by hand."""
    model.eval()
    backbone = model.backbone
    if hasattr(backbone, "layer4"):
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                             backbone.layer1, backbone.layer2, backbone.layer3)
        rest = nn.Sequential(backbone.avgpool, nn.Flatten())
        activation = backbone.layer4(stem(x)).detach().requires_grad_(True)
    else:
        children = list(backbone.children())
        cut = children.index(layer) + 1
        activation = nn.Sequential(*children[:cut])(x).detach().requires_grad_(True)
        rest = nn.Sequential(*children[cut:])
    logits = model.head(rest(activation))
    score = logits[torch.arange(len(classes)), torch.tensor(classes)].sum()
    grads, = torch.autograd.grad(score, activation)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * activation).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear",
                                          align_corners=False)[:, 0].detach().numpy()
    return cam / np.maximum(cam.reshape(len(cam), -1).max(1), 1e-12)[:, None, None]


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_hooks_give_the_map_explicit_autograd_gives(name):
    torch.manual_seed(0)
    model = build_model(name, 5, 1)
    x = torch.randn(3, 1, 64, 64)
    layer = cam_layer(model)
    maps, _ = grad_cam(model, x, [0, 3, 4])
    np.testing.assert_allclose(maps, _maps_without_hooks(model, x, [0, 3, 4], layer), atol=1e-5)
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1


def test_the_layer_is_the_last_spatial_block_of_each_model():
    resnet = build_model("resnet18", 3, 1)
    assert cam_layer(resnet) is resnet.backbone.layer4
    mobile = build_model("mobilenet_v2", 3, 1)
    assert cam_layer(mobile) is mobile.backbone[0]
    small = build_model("smallcnn", 3, 1)
    assert isinstance(cam_layer(small), nn.ReLU)
    x = torch.randn(1, 1, 64, 64)
    for model in (resnet, mobile, small):  # a map, not a vector
        seen = []
        handle = cam_layer(model).register_forward_hook(lambda _m, _i, o, seen=seen: seen.append(o))
        model.eval()(x)
        handle.remove()
        assert seen[-1].dim() == 4 and seen[-1].shape[-1] > 1


def test_a_training_model_is_left_training_and_its_weights_untouched():
    model = build_model("smallcnn", 3, 1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grad_cam(model, torch.randn(2, 1, 32, 32), [0, 1])
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # eval mode: BN statistics unchanged
    assert all(p.grad is None for p in model.parameters())


def test_overlay_keeps_the_image_where_the_map_is_zero():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8))
    plain = overlay(image, np.zeros((8, 8)))
    assert plain.dtype == np.uint8 and plain.shape == (8, 8, 3)
    np.testing.assert_array_equal(plain[..., 0], (image * 255 + 0.5).astype(np.uint8))
    hot = overlay(image, np.ones((8, 8)))
    assert not np.array_equal(hot, plain)


def test_explaining_files_gives_a_map_each_and_a_sentence_for_a_broken_one(tmp_path):
    from olsdesk.core.data.transforms import Preprocessing
    from olsdesk.core.predictor import Predictor

    rng = np.random.default_rng(1)
    good = write_png(tmp_path / "good.png", (rng.random((40, 40)) * 255).astype(np.uint8))
    broken = truncate(write_png(tmp_path / "broken.png",
                                (rng.random((40, 40)) * 255).astype(np.uint8)), 0.3)
    predictor = Predictor(build_model("smallcnn", 3, 1), ("a", "b", "c"),
                          Preprocessing.for_size(32, 1))
    samples = FileSamples([str(good), str(broken)], np.array([0, 1]))
    out = list(iter_explain(predictor, samples, [(7, 0, 2), (8, 1, 0)]))
    assert [e.row for e in out] == [7, 8]
    assert out[0].error is None and out[0].cam.shape == out[0].image.shape == (32, 32)
    assert out[0].class_index == 2 and out[0].picture().shape == (32, 32, 3)
    assert out[1].error and "broken.png" in out[1].error


def test_a_sample_that_fails_in_any_way_is_its_own_sentence_not_the_jobs_end(tmp_path):
    """The firewall is Preprocessing.prepare's, shared with training and prediction: a
    ValueError from one sample (an array of the wrong shape) used to end the whole job."""
    from olsdesk.core.data.transforms import Preprocessing
    from olsdesk.core.predictor import Predictor

    class OneOdd(FileSamples):
        def load(self, index, preprocessing=None):
            if index == 1:
                return np.zeros((2, 2, 2, 2), np.float32)  # not an image
            return super().load(index, preprocessing)

    rng = np.random.default_rng(2)
    files = [str(write_png(tmp_path / f"{i}.png", (rng.random((40, 40)) * 255)
                           .astype(np.uint8))) for i in range(3)]
    predictor = Predictor(build_model("smallcnn", 3, 1), ("a", "b", "c"),
                          Preprocessing.for_size(32, 1))
    out = list(iter_explain(predictor, OneOdd(files, np.zeros(3, int)),
                            [(0, 0, 0), (1, 1, 0), (2, 2, 1)]))
    assert [e.error is None for e in out] == [True, False, True]
    assert "1.png could not be prepared for the model (ValueError" in out[1].error
