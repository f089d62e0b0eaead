"""Argument checks shared by the public constructors and layers: a wrong type or shape gets a
`bofexits` error that names the argument and the fix, not a TypeError from deep inside torch."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch

from bofexits.errors import ConfigError, InputError

__all__ = ["check_feature_map", "require_int", "state_mismatch", "unsafe_load_reason"]


def require_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """`value` as an int, refusing floats (3.5 codewords), bools and strings.

    >>> require_int("codewords", 32)
    32
    >>> require_int("codewords", 3.5)
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: codewords must be an integer, got 3.5 (float)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_feature_map(x: object, channels: int, dtype: torch.dtype) -> None:
    """Refuse a feature map a BoF layer cannot quantise: not (B, C, H, W), wrong C or dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor feature map, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise InputError(
            f"expected a (B, {channels}, H, W) feature map, got shape {tuple(x.shape)}; "
            "build the layer with in_channels equal to the stage's output channels"
        )
    if x.shape[0] and (x.shape[2] == 0 or x.shape[3] == 0):
        raise InputError(
            f"the feature map has no positions (shape {tuple(x.shape)}); the input image is too small"
        )
    if x.dtype != dtype:
        raise InputError(
            f"expected a {str(dtype).removeprefix('torch.')} feature map (the layer's dtype), got "
            f"{str(x.dtype).removeprefix('torch.')}; convert the input or the layer with .to(dtype)"
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError("the feature map holds NaN or inf values; check the input images and the weights")


def state_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, object]) -> str:
    """What keeps `state` from loading into a module whose state_dict is `own` ("" when nothing).

    Names the first few missing, unexpected and mis-shaped tensors, both shapes for the last, so a
    file made for another architecture (or another head size) is told apart from a truncated one.

    >>> state_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3), "b": torch.zeros(1)})
    "unexpected ['b']; shape mismatch w (3,) vs (2,)"
    """
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if getattr(state[k], "shape", None) != own[k].shape)
    parts = []
    if missing:
        parts.append(f"missing {missing[:4]}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:4]}")
    if shapes:
        parts.append(
            "shape mismatch "
            + ", ".join(
                f"{k} {tuple(getattr(state[k], 'shape', ()))} vs {tuple(own[k].shape)}" for k in shapes[:4]
            )
        )
    return "; ".join(parts)


def unsafe_load_reason(exc: BaseException) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, without torch's advice to retry with
    `weights_only=False`: for an untrusted file that advice is the attack."""
    text = str(exc)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    first = text.splitlines()[0].split(". ")[0] if text.strip() else ""
    return first if first and "weights_only" not in first else type(exc).__name__
