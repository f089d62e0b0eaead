"""Exit positions finer than a backbone's stages: its units, and stages regrouped from them.

A backbone's default stages put an exit after each of a few coarse stages. Cost-aware
placement (`bofexits.training.place`) tries exits at every boundary the backbone offers and
keeps the ones that pay. The boundaries come from the backbone itself: every `nn.Sequential`
in its stages (exactly that type, whose forward is the chain of its children) is opened up,
and a convolution or linear layer stays joined to the normalisation and activation that
follow it, so an exit never reads a map before its ReLU. The units of `vgg28` are its seven
conv-BN-ReLU blocks, three max-pools and the global pool, flatten and classifier; a ResNet's
are its stem and basic blocks.

A placed network is an ordinary `MultiExitNetwork` whose stages are consecutive units
(`regroup`), recorded in `ModelConfig.exit_points` (indices of the units an exit follows),
so a checkpoint rebuilds the same modules, with the same state_dict keys, from its config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from bofexits.errors import ConfigError

__all__ = ["candidate_points", "candidate_pools", "fine_units", "regroup", "unit_shapes"]

# Layers that finish the unit before them: an exit reads a map after these, never before.
_JOINED = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.LeakyReLU,
)


def _open(module: nn.Module) -> list[nn.Module]:
    """The leaf pieces of a chain: plain `nn.Sequential`s opened up, recursively."""
    if type(module) is nn.Sequential:
        return [piece for child in module.children() for piece in _open(child)]
    return [module]


def fine_units(stages: Iterable[nn.Module]) -> list[nn.Module]:
    """The backbone as a chain of units, each a boundary an exit may follow.

    A piece followed by a normalisation or activation is joined to it in one `nn.Sequential`.

    >>> units = fine_units([nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2))])
    >>> [type(u).__name__ for u in units]
    ['Sequential', 'MaxPool2d']
    """
    pieces = [p for stage in stages for p in _open(stage)]
    units: list[list[nn.Module]] = []
    for piece in pieces:
        if units and isinstance(piece, _JOINED):
            units[-1].append(piece)
        else:
            units.append([piece])
    return [group[0] if len(group) == 1 else nn.Sequential(*group) for group in units]


def regroup(units: Sequence[nn.Module], points: Sequence[int]) -> list[nn.Module]:
    """Stages made of consecutive units, ending after each unit index in `points` (0-based).

    >>> [len(s) for s in regroup([nn.Identity()] * 4, [0, 2])]
    [1, 2, 1]
    """
    at = list(points)
    n = len(units)
    if not at or at != sorted(set(at)) or at[0] < 0 or at[-1] >= n - 1:
        raise ConfigError(
            f"exit_points {at} must be strictly increasing unit indices in [0, {n - 2}] "
            "(the last stage needs at least one unit); `bofexits place` writes valid ones"
        )
    bounds = [0, *(p + 1 for p in at), n]
    return [nn.Sequential(*units[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@torch.no_grad()
def unit_shapes(units: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The output shape of each unit without the batch (eval mode, one zero image).

    Every layer's own mode is restored afterwards (the units' `nn.Sequential` wrappers are new
    and in training mode, so restoring theirs would put a frozen backbone's BatchNorm in
    training mode, where the next forward would overwrite its statistics).
    """
    modes = [(m, m.training) for u in units for m in u.modules()]
    x = torch.zeros(1, *input_shape)
    shapes = []
    try:
        for u in units:
            x = u.eval()(x)
            shapes.append(tuple(int(s) for s in x.shape[1:]))
    finally:
        for m, mode in modes:
            m.training = mode
    return shapes


def candidate_points(shapes: Sequence[tuple[int, ...]], min_side: int = 2) -> list[int]:
    """Every unit an exit can follow: a (C, H, W) map of at least `min_side` a side, not the last unit.

    A BoF exit quantises positions of a map; a 1x1 map (after a global pool) has one position
    and a flattened vector none, and the spatial level-1 histogram needs 2x2.

    >>> candidate_points([(4, 8, 8), (4, 4, 4), (4, 1, 1), (4,), (10,)])
    [0, 1]
    """
    return [i for i, s in enumerate(shapes[:-1]) if len(s) == 3 and min(s[1], s[2]) >= min_side]


def candidate_pools(
    sides: Sequence[int], default_sides: Sequence[int], default_pools: Sequence[int]
) -> list[int]:
    """Pre-pool factors for exits on maps of the given sides, as coarse as the backbone's defaults.

    The defaults (e.g. vgg28's [2, 1, 1] on 14, 7 and 3 px) fix the largest side an exit
    quantises (7 px for vgg28); a candidate on a larger map pools down to it.

    >>> candidate_pools([28, 14, 7, 3], [14, 7, 3], [2, 1, 1])
    [4, 2, 1, 1]
    """
    target = max(math.ceil(s / p) for s, p in zip(default_sides, default_pools, strict=True))
    return [max(1, math.ceil(s / target)) for s in sides]
