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
