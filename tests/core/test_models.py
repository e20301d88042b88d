"""Model building, grayscale input, features and local weights."""

import pytest
import torch

from olsdesk.core.models import WeightsError, build_model


@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("channels", [1, 3])
def test_models_classify_and_expose_features(name, channels):
    model = build_model(name, 5, channels).eval()
    x = torch.randn(2, channels, 32, 32)
    logits, feats = model.forward_with_features(x)
    assert logits.shape == (2, 5) and feats.shape == (2, model.feature_dim)
    assert torch.allclose(model(x), logits) and torch.allclose(model.features(x), feats)


@pytest.mark.parametrize("name,dim", [("resnet50", 2048), ("vgg19", 4096)])
def test_large_models_build_with_penultimate_features(name, dim):
    model = build_model(name, 7, 1).eval()
    assert model.feature_dim == dim
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet", 3)


def test_local_imagenet_style_weights_load_with_gray_conv_and_new_head(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    source = resnet18()  # a 1000-class, 3-channel network standing in for ImageNet weights
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = build_model("resnet18", 4, in_channels=1, weights=path)
    conv = model.backbone.conv1.weight
    assert torch.allclose(conv, source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert model.head.out_features == 4


def test_weights_of_another_architecture_are_refused(tmp_path):
    from torchvision.models import mobilenet_v2

    path = tmp_path / "mnv2.pth"
    torch.save(mobilenet_v2().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        build_model("resnet18", 4, weights=path)


def test_a_file_that_is_not_weights_is_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        build_model("smallcnn", 4, weights=path)


def test_a_weights_file_that_would_unpack_to_a_gigabyte_is_not_opened(tmp_path):
    from tests.helpers import write_zip_bomb

    bomb = write_zip_bomb(tmp_path / "bomb.pth")
    with pytest.raises(WeightsError, match="would unpack to 1.0 GB from a 1.0 MB file; no "
                                           "PyTorch weights file does that"):
        build_model("smallcnn", 4, weights=bomb)


def test_a_legacy_format_state_dict_is_still_read(tmp_path):
    """torch's pre-1.6 format is not a zip: the size check leaves it to torch."""
    from olsdesk.core.models import load_state_file

    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_file(path)["w"], torch.ones(3))


def test_radimagenet_pytorch_layout_maps_onto_torchvision_names(tmp_path):
    """RadImageNet's published PyTorch ResNet-50: an nn.Sequential of ResNet-50's children
    (without fc) saved under ``backbone.``: backbone.0 is conv1, backbone.4 layer1, …"""
    from torchvision.models import resnet50

    from olsdesk.core.weights import sha256_of

    torch.manual_seed(1)
    source = resnet50()
    sequential = torch.nn.Sequential(*list(source.children())[:-1])
    path = tmp_path / "RadImageNet-ResNet50.pt"
    torch.save({f"backbone.{k}": v for k, v in sequential.state_dict().items()}, path)
    model = build_model("resnet50", 3, in_channels=1, weights=path)
    assert torch.allclose(model.backbone.conv1.weight,
                          source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert torch.equal(model.backbone.layer4[2].bn3.running_var, source.layer4[2].bn3.running_var)
    report = model.weights_report
    # every float tensor of the backbone: 53 convolutions + 53 BatchNorms x 4
    assert (report.loaded, report.total) == (265, 265) and report.fresh == ()
    assert report.unused == 0  # its BatchNorms' counters load too (not counted above)
    assert report.adapted_input and report.sha256 == sha256_of(path)
    assert "265 of 265 backbone tensors loaded from RadImageNet-ResNet50.pt" in \
        report.sentence()


def test_imagenet_weights_come_from_torchvision_cache_or_say_where_to_put_them(
        tmp_path, monkeypatch):
    from urllib.error import URLError

    from torchvision.models import resnet18

    from olsdesk.core import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, path):
        raise URLError("no network")

    monkeypatch.setattr(weights, "_download", offline)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert weights.imagenet_status("resnet18") == (False, cache / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsError) as refused:
        build_model("resnet18", 4, weights="imagenet")
    assert str(refused.value) == (
        "ImageNet weights for resnet18 are not on this machine and could not be downloaded "
        "(URLError): put resnet18-f37072fd.pth (from "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth) into "
        f"{cache}.")
    torch.manual_seed(2)
    source = resnet18()
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / "resnet18-f37072fd.pth")
    assert weights.imagenet_status("resnet18")[0]
    model = build_model("resnet18", 4, weights="imagenet")
    assert torch.equal(model.backbone.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    report = model.weights_report
    assert report.name == "imagenet" and report.loaded == report.total == 100
    assert report.unused == 2  # the 1000-class fc
    with pytest.raises(WeightsError, match="no ImageNet weights for smallcnn"):
        build_model("smallcnn", 4, weights="imagenet")


def test_a_file_that_leaves_convolutions_fresh_is_refused_unless_asked(tmp_path):
    from torchvision.models import resnet18

    state = {k: v for k, v in resnet18().state_dict().items() if not k.startswith("layer4")}
    path = tmp_path / "no_layer4.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as refused:
        build_model("resnet18", 4, weights=path)
    assert str(refused.value).startswith(
        "no_layer4.pth does not fit resnet18: 5 of its 20 convolutions have no tensor of "
        "that name and shape in the file (first: layer4.0.conv1.weight)")
    assert "--allow-partial-weights" in str(refused.value)
    report = build_model("resnet18", 4, weights=path, allow_partial=True).weights_report
    assert report.total - report.loaded == 25  # 5 convolutions, 5 BatchNorms x 4
    assert report.fresh[0] == "layer4.0.bn1" and "layer4.1.conv2" in report.fresh
