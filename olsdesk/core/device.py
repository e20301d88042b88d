"""Which device trains and predicts: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from olsdesk.errors import ConfigError


def accelerators() -> dict[str, bool]:
    """Which accelerators this PyTorch can use here: {'cuda': …, 'mps': …}."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return {"cuda": torch.cuda.is_available(), "mps": mps}


def choose_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then the CPU; an explicit choice that is absent is an error."""
    found = accelerators()
    cuda, mps = found["cuda"], found["mps"]
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if preference == "cuda" and not cuda:
        raise ConfigError("CUDA was asked for, but this PyTorch sees no CUDA GPU.")
    if preference == "mps" and not mps:
        raise ConfigError("Apple MPS was asked for, but this PyTorch cannot use it here.")
    return torch.device(preference)


# where a run's ``amp`` setting turns mixed precision on (the CPU's bf16 is slower than
# its float32 on most CPUs; tests turn it on there to check the one rule below)
AMP_DEVICES = ("cuda",)


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The reduced precision a run's forward passes use on ``device``: bf16 (float16
    where a GPU has no bf16), or None for float32. One rule for training, validation,
    prediction and evaluation, so the confidences stored at validation are the ones a
    prediction on the same kind of device computes."""
    if not amp or device.type not in AMP_DEVICES:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


# where models and their inputs are channels-last (N x H x W x C in memory): a GPU's tensor
# cores take it, and so do the CPU's oneDNN kernels (on this project's 2-core x86 VM
# every model's batches took 0.54-0.96 of their time in the default layout, the small
# CNN's max pooling most of its difference: bench/memory_format.py). Apple's MPS is
# unmeasured: it keeps the default
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of a model's weights and of the batches it runs on ``device``: one
    rule for training, validation, prediction, evaluation and Grad-CAM, because a CPU
    convolution takes another algorithm, so another rounding, in another layout (the
    confidences stored at validation are the ones a prediction computes)."""
    return (torch.channels_last if device.type in CHANNELS_LAST_DEVICES
            else torch.contiguous_format)


def forward_precision(device: torch.device, amp: bool) -> torch.autocast:
    """The autocast region a forward pass runs in under ``amp_dtype``'s rule."""
    dtype = amp_dtype(device, amp)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def describe_device(device: torch.device) -> str:
    """A short human name for a device, e.g. 'cuda (NVIDIA H100)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def device_menu_label() -> str:
    """What 'auto' means on this machine, for the app's device menu."""
    found = accelerators()
    if found["cuda"]:
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return "Apple MPS" if found["mps"] else "CPU: no GPU found"
