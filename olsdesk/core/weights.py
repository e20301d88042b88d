"""Where a run's starting weights come from, and what loading them did.

``--weights`` takes a local state-dict file (torchvision's names, RadImageNet's PyTorch
layout of ``backbone.N.`` keys, common wrapper prefixes) or ``imagenet``: torchvision's
ImageNet weights for the chosen model (its ``DEFAULT`` weights), read from torchvision's
cache (``$TORCH_HOME/hub/checkpoints``) when the file is there, downloaded through
torch.hub into that cache when the machine is online, and otherwise refused in one
sentence naming the file and the folder to put it in. ``LoadReport`` says how many of
the backbone's tensors were loaded and which parts stayed fresh; the run records it with
the file's SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from olsdesk.errors import WeightsError

IMAGENET = "imagenet"  # the name of torchvision's ImageNet weights for --weights
# the tensors replaced for K classes: never loaded, never counted
HEAD_PREFIX = {"smallcnn": "head.", "resnet18": "fc.", "resnet50": "fc.",
               "mobilenet_v2": "classifier.1.", "vgg19": "classifier.6."}


@dataclass(frozen=True)
class LoadReport:
    """What loading a weights file into a model did."""

    name: str  # what the user named: a path, or "imagenet"
    file: str  # the file read
    sha256: str
    loaded: int  # backbone tensors loaded
    total: int  # backbone tensors (the head, replaced for K classes, not counted)
    fresh: tuple[str, ...]  # backbone modules left at their random start
    unused: int  # tensors of the file that went nowhere (its own head included)
    adapted_input: bool  # the first convolution's kernels summed or spread for the input

    def sentence(self) -> str:
        """One line for the CLI and the run's log."""
        fresh = (f"; fresh: {', '.join(self.fresh[:4])}"
                 + (f" and {len(self.fresh) - 4} more" if len(self.fresh) > 4 else "")
                 if self.fresh else "")
        adapted = "; first convolution adapted to the input channels" if self.adapted_input \
            else ""
        return (f"weights: {self.loaded} of {self.total} backbone tensors loaded from "
                f"{Path(self.file).name} (sha256 {self.sha256[:12]}…){fresh}{adapted}; "
                f"{self.unused} of the file's tensors unused; the head is new")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fresh"] = list(self.fresh)
        return out


def imagenet_file(model: str) -> tuple[str, Path]:
    """(download URL, cache path) of torchvision's ImageNet weights for ``model``."""
    import torch
    from torchvision import models as tvm

    if model not in HEAD_PREFIX or model == "smallcnn":
        raise WeightsError(f"torchvision has no ImageNet weights for {model}; choose a "
                           "weights file, or ResNet, MobileNetV2 or VGG.")
    url = tvm.get_model_weights(model).DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_status(model: str) -> tuple[bool, Path]:
    """(cached, the path expected) of ``model``'s ImageNet weights, for the app."""
    _, path = imagenet_file(model)
    return path.is_file(), path


def _download(url: str, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), progress=False)


def resolve(weights: str | Path, model: str) -> Path:
    """The file ``weights`` names: itself, or for ``imagenet`` torchvision's cached (or
    now downloaded) file; WeightsError with a sentence otherwise."""
    if str(weights) != IMAGENET:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist.")
        return path
    url, path = imagenet_file(model)
    if path.is_file():
        return path
    try:
        _download(url, path)
    except Exception as exc:  # offline, a proxy, a full disk: the same sentence
        raise WeightsError(
            f"ImageNet weights for {model} are not on this machine and could not be "
            f"downloaded ({type(exc).__name__}): put {path.name} (from {url}) into "
            f"{path.parent}.") from None
    return path


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
