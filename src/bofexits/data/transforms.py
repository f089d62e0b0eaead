"""Batch-level image transforms on float tensors, so augmentation needs no torchvision.

Every random transform draws from an explicit ``torch.Generator`` so a seeded training run is
reproducible, and works on a whole ``(B, C, H, W)`` batch at once instead of looping over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from bofexits.errors import InputError

__all__ = ["Transform", "compose", "normalize", "random_crop", "random_horizontal_flip"]


class Transform(Protocol):
    """A batch transform: called as ``fn(x, generator=generator)`` on a ``(B, C, H, W)`` float batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def _check_batch(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} expects a (B, C, H, W) tensor, got {shape}; add a batch dimension")
    if not x.is_floating_point():
        raise InputError(f"{what} expects a float tensor, got {x.dtype}; convert with x.float() / 255")


def _uniform(n: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` uniform draws made on the generator's device, then moved to ``x``'s device."""
    device = generator.device if generator is not None else x.device
    return torch.rand(n, generator=generator, device=device).to(x.device)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Return ``(x - mean) / std`` per channel, giving the network zero-mean unit-variance inputs.

    Args:
        x: ``(B, C, H, W)`` float batch, typically in ``[0, 1]``.
        mean: ``C`` per-channel means.
        std: ``C`` per-channel standard deviations, all positive.

    Returns:
        A new ``(B, C, H, W)`` tensor; ``x`` is not modified.

    Example:
        >>> normalize(torch.full((1, 1, 2, 2), 0.5), (0.25,), (0.5,)).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    _check_batch(x, "normalize")
    channels = x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise InputError(
            f"normalize got {len(mean)} means and {len(std)} stds for {channels} channels; "
            "pass one per channel"
        )
    if any(s <= 0 for s in std):
        raise InputError(f"normalize needs positive std values, got {tuple(std)}")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, channels, 1, 1)
    return (x - m) / s


def random_horizontal_flip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each sample left-right independently with probability ``p``.

    Args:
        x: ``(B, C, H, W)`` float batch.
        p: flip probability per sample, in ``[0, 1]``.
        generator: source of randomness; ``None`` uses the global RNG.

    Returns:
        A new ``(B, C, H, W)`` tensor.

    Example:
        >>> x = torch.arange(3.0).view(1, 1, 1, 3)
        >>> random_horizontal_flip(x, p=1.0).flatten().tolist()
        [2.0, 1.0, 0.0]
    """
    _check_batch(x, "random_horizontal_flip")
    if not 0.0 <= p <= 1.0:
        raise InputError(f"random_horizontal_flip needs 0 <= p <= 1, got {p}")
    flip = (_uniform(x.shape[0], x, generator) < p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None, fill: float = 0.0
) -> torch.Tensor:
    """Pad each side by ``padding`` then cut a random ``H x W`` window per sample (translation jitter).

    The batch is padded once and all windows are gathered with one advanced-indexing call.

    Args:
        x: ``(B, C, H, W)`` float batch.
        padding: pixels added on every side; offsets are uniform in ``[0, 2 * padding]``.
        generator: source of randomness; ``None`` uses the global RNG.
        fill: value of the padded border (e.g. the normalised background).

    Returns:
        A new ``(B, C, H, W)`` tensor.

    Example:
        >>> random_crop(torch.ones(2, 3, 8, 8), padding=2).shape
        torch.Size([2, 3, 8, 8])
    """
    _check_batch(x, "random_crop")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InputError(f"random_crop needs a non-negative int padding, got {padding!r}")
    if padding == 0:
        return x.clone()
    batch, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), mode="constant", value=fill)
    span = 2 * padding + 1
    device = generator.device if generator is not None else x.device
    offsets = torch.randint(0, span, (2, batch), generator=generator, device=device).to(x.device)
    rows = offsets[0, :, None] + torch.arange(height, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(width, device=x.device)  # (B, W)
    index = torch.arange(batch, device=x.device)[:, None, None]
    # (B, H+2p, W+2p, C) indexed by (B,1,1), (B,H,1), (B,1,W) -> (B, H, W, C)
    out = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def compose(*fns: Transform) -> Transform:
    """Chain transforms into one, sharing a single generator so the whole pipeline is seeded once.

    Args:
        *fns: transforms applied left to right, each called as ``fn(x, generator=generator)``;
            bind extra arguments with ``functools.partial``.

    Returns:
        A callable ``(x, generator=None) -> x``.

    Example:
        >>> from functools import partial
        >>> aug = compose(partial(random_crop, padding=1), random_horizontal_flip)
        >>> aug(torch.zeros(4, 1, 5, 5), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 5, 5])
    """
    for fn in fns:
        if not callable(fn):
            raise InputError(f"compose got a non-callable {fn!r}; pass functions")

    def composed(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for fn in fns:
            x = fn(x, generator=generator)
        return x

    return composed
