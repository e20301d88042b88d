"""``build_model(name, num_classes, in_channels, weights)``: classifiers with a features hook.

Every model is a ``Classifier``: a ``backbone`` that ends in the penultimate feature
vector (what the embedding view projects) and a ``head`` that maps it to logits.
``weights`` is an optional state-dict file (ImageNet or RadImageNet weights, say) or
``imagenet`` (torchvision's, through ``core.weights``), loaded tensor by tensor where
names and shapes fit, with the first convolution adapted to the input channels and the
head left fresh for K classes; a file that leaves a convolution unmatched is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from olsdesk.config import MODEL_NAMES
from olsdesk.core.archives import check_archive
from olsdesk.core.weights import HEAD_PREFIX, IMAGENET, LoadReport, resolve, sha256_of
from olsdesk.errors import WeightsError


class Classifier(nn.Module):
    """backbone -> penultimate features -> head -> logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim
        self.weights_report = None  # core.weights.LoadReport of the starting weights

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate feature vector (N x feature_dim)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and features from one pass (validation wants both)."""
        feats = self.backbone(x)
        return self.head(feats), feats


def _small_cnn(num_classes: int, in_channels: int) -> Classifier:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    backbone = nn.Sequential(
        *block(in_channels, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), *block(128, 128), nn.MaxPool2d(2),
        *block(128, 256),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(backbone, nn.Linear(256, num_classes), 256)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    from torchvision import models as tvm

    return {"resnet18": tvm.resnet18, "resnet50": tvm.resnet50,
            "mobilenet_v2": tvm.mobilenet_v2, "vgg19": tvm.vgg19}[name]


def _split_torchvision(name: str, net: nn.Module, num_classes: int) -> Classifier:
    if name.startswith("resnet"):
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return Classifier(net, nn.Linear(dim, num_classes), dim)
    if name == "mobilenet_v2":
        dim = net.classifier[-1].in_features
        backbone = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        head = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, num_classes))
        return Classifier(backbone, head, dim)
    # vgg19: features -> avgpool -> flatten -> the classifier up to its last layer
    dim = net.classifier[-1].in_features
    backbone = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *net.classifier[:-1])
    return Classifier(backbone, nn.Linear(dim, num_classes), dim)


def _first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, conv) of the network's first convolution."""
    for name, child in net.named_modules():
        if isinstance(child, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            return net.get_submodule(parent_name), attr, child
    raise TypeError("model has no convolution")


def _adapt_input_channels(net: nn.Module, in_channels: int) -> None:
    parent, attr, conv = _first_conv(net)
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(_adapt_kernel(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)


def _adapt_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB kernels for gray input are summed (the same response to a gray image);
    gray kernels for RGB input are repeated and divided by 3."""
    have = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_channels, 1, 1) / in_channels
    raise WeightsError(f"cannot adapt a {have}-channel first layer to {in_channels} channels.")


_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "net.")


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, never running code from it (weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist.")
    check_archive(path, WeightsError, "a PyTorch weights file", require_zip=False)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals
        raise WeightsError(f"{path.name} is not a PyTorch weights file olsdesk can open "
                           f"safely ({type(exc).__name__}).") from exc
    for key in ("state_dict", "model_state", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path.name} does not hold a state dict of tensors.")
    return data


def _own_key(key: str, own: dict, children: list[str]) -> str | None:
    """The model's name for a file's tensor name, trying common wrapper prefixes and the
    layout of an ``nn.Sequential`` of the model's children (RadImageNet's PyTorch
    weights: ``backbone.4.0.conv1.weight`` is ResNet's ``layer1.0.conv1.weight``)."""
    while True:
        if key in own:
            return key
        head, _, rest = key.partition(".")
        if head.isdigit() and int(head) < len(children) and rest:
            mapped = f"{children[int(head)]}.{rest}"
            if mapped in own:
                return mapped
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return None
        key = key[len(prefix):]


def _load_matching(net: nn.Module, state: dict[str, torch.Tensor], name: str, file: Path,
                   model: str, allow_partial: bool = False) -> LoadReport:
    """Copy every tensor whose name and shape fit. Refused (WeightsError) when a backbone
    convolution stays unmatched (the file was made for another architecture), unless
    ``allow_partial``; never when nothing at all matches."""
    own = net.state_dict()
    head = HEAD_PREFIX[model]
    conv_key = next(k for k, v in own.items() if v.ndim == 4)
    children = [child for child, _ in net.named_children()]
    loaded, adapted = {}, False
    for file_key, value in state.items():
        key = _own_key(file_key, own, children)
        if key is None or key.startswith(head):
            continue
        if key == conv_key and value.ndim == 4 and value.shape[1] != own[key].shape[1]:
            value, adapted = _adapt_kernel(value, own[key].shape[1]), True
        if value.shape == own[key].shape:
            loaded[key] = value
    backbone = [k for k in own if own[k].is_floating_point() and not k.startswith(head)]
    convolutions = [k for k in backbone if own[k].ndim == 4]
    missing = [k for k in convolutions if k not in loaded]
    source = Path(name).name if name != IMAGENET else f"ImageNet weights ({file.name})"
    if not loaded or (missing and not allow_partial):
        raise WeightsError(
            f"{source} does not fit {model}: {len(missing)} of its {len(convolutions)} "
            f"convolutions have no tensor of that name and shape in the file (first: "
            f"{missing[0] if missing else '-'}); {sum(k in loaded for k in backbone)} of "
            f"{len(backbone)} backbone "
            "tensors match. It was made for another architecture"
            + ("." if not loaded else "; --allow-partial-weights starts from it anyway, "
               "with those layers fresh."))
    net.load_state_dict(loaded, strict=False)
    fresh = sorted({k.rsplit(".", 1)[0] for k in backbone if k not in loaded})
    return LoadReport(str(name), str(file), sha256_of(file),
                      sum(k in loaded for k in backbone), len(backbone),
                      tuple(fresh), len(state) - len(loaded), adapted)


def build_model(name: str, num_classes: int, in_channels: int = 3,
                weights: str | Path | None = None,
                allow_partial: bool = False) -> Classifier:
    """A classifier for ``num_classes``; ``weights`` is an optional state-dict file or
    ``imagenet`` (``core.weights``). What loading did is the model's ``weights_report``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if in_channels not in (1, 3):
        raise ValueError("in_channels must be 1 (grayscale) or 3 (colour)")
    report = None
    if name == "smallcnn":
        model = _small_cnn(num_classes, in_channels)
        if weights is not None:
            file = resolve(weights, name)
            report = _load_matching(model, load_state_file(file), str(weights), file, name,
                                    allow_partial)
    else:
        net = _torchvision(name)(weights=None)
        _adapt_input_channels(net, in_channels)
        if weights is not None:
            file = resolve(weights, name)
            report = _load_matching(net, load_state_file(file), str(weights), file, name,
                                    allow_partial)
        model = _split_torchvision(name, net, num_classes)
    model.weights_report = report
    return model
