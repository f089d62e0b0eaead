"""Where networks run: the one reading of `--device` (auto, cpu, cuda, cuda:N) for every verb.

Every command that runs a network takes the same device names, read here and nowhere else.
`check_device_name` checks the spelling without importing torch, so the command line refuses a
typo at parse time even for `bofexits predict EXPORT_DIR`, which never imports torch.
`resolve_device` turns a name into a `torch.device` and refuses a GPU that is not there, so a
verb fails before its first piece of work (no folder created, no checkpoint read).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bofexits.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is needed: the spelling check must not need it
    import torch
    from torch import nn

__all__ = [
    "DEVICE_HELP",
    "check_device_name",
    "describe_device",
    "device_argument",
    "device_of",
    "place_model",
    "resolve_device",
]

DEVICE_HELP = "auto (a CUDA GPU when one is visible, else the CPU), cpu, cuda or cuda:N"
"""What `--device` accepts, for every verb's help."""

_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(name: object) -> str:
    """`name` itself when it spells a device: auto, cpu, cuda or cuda:N (whether it exists is not checked).

    Raises:
        ConfigError: any other value; the message lists the accepted names.

    >>> check_device_name("cuda:1")
    'cuda:1'
    >>> check_device_name("gpu")
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: unknown device 'gpu'; use auto, cpu, cuda or cuda:N
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return name


def device_argument(text: str) -> str:
    """An argparse type for `--device` (the CLI's and the benchmarks'): the spelling, checked at parse time.

    Whether that GPU is there is left to `resolve_device`, when the command starts: parsing
    must not import torch.
    """
    import argparse

    try:
        return check_device_name(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device `device` names; "auto" is the first CUDA GPU when one is visible, else the CPU.

    Nothing needs a GPU: "auto" on a machine without one is the CPU. An explicit "cuda" is
    refused up front when torch sees no GPU (or not that many), instead of failing at the
    first tensor moved there.

    Args:
        device: a name `check_device_name` accepts, or a `torch.device` of type cpu or cuda.

    Raises:
        ConfigError: an unknown name, or CUDA asked for where no such GPU is visible.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    name = check_device_name(str(device) if isinstance(device, torch.device) else device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        _check_cuda(name)
    return torch.device(name)


def _check_cuda(name: str) -> None:
    """Refuse `name` ("cuda" or "cuda:N") unless torch sees that GPU."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA GPU; "
            "use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= count:
        raise ConfigError(
            f"device {name!r} asked for, but torch sees {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1}); "
            "use one of those, or auto"
        )


def describe_device(device: torch.device) -> str:
    """What results record as the device they ran on: "cpu", or the GPU's name ("NVIDIA H200").

    >>> import torch
    >>> describe_device(torch.device("cpu"))
    'cpu'
    """
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


def device_of(*modules: nn.Module) -> torch.device:
    """Where the first parameter of `modules` is (the CPU when they have none).

    >>> from torch import nn
    >>> device_of(nn.ReLU(), nn.Linear(2, 2))
    device(type='cpu')
    """
    import torch

    for module in modules:
        first = next(iter(module.parameters()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


def place_model(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Move `model` to `device` (resolved) and return where it now is.

    Args:
        model: moved in place.
        device: as `resolve_device` reads it; None leaves the model where it is (`device_of`).

    >>> from torch import nn
    >>> place_model(nn.Linear(2, 2), "cpu")
    device(type='cpu')
    """
    if device is None:
        return device_of(model)
    resolved = resolve_device(device)
    model.to(resolved)
    return resolved
