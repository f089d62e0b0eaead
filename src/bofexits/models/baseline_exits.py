"""Baseline exit heads for side-by-side numbers with the BoF exits: SDN and BranchyNet style.

Both are independent per-exit classifiers (no state carried between exits, so `step` returns
None as the state) behind the same `ExitHeads` interface as `BoFExits`; training, cost
accounting and the runtime treat all three alike.

* `PooledLinearExits`: Shallow-Deep Networks (Kaya, Hong and Dumitras, "Shallow-Deep Networks:
  Understanding and Mitigating Network Overthinking", ICML 2019). Each internal classifier
  mixes max and average pooling with a learnable weight, alpha * max + (1 - alpha) * avg,
  down to a small fixed map (4x4), and classifies the flattened result with one linear layer.
* `ConvExits`: BranchyNet (Teerapittayanon, McDanel and Kung, "BranchyNet: Fast Inference via
  Early Exiting from Deep Neural Networks", ICPR 2016) style branches: a small conv block
  (3x3 conv, stride 2 on large maps, few channels, BN, ReLU), global average pooling and a
  linear layer.

Both stay under 5% of the reference backbones' MACs with their defaults
(`tests/test_baseline_exits.py` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bofexits.errors import ConfigError
from bofexits.models.exits import ExitHeads

__all__ = ["ConvExits", "PooledLinearExits"]

MapSize = tuple[int, int]


def _check_sizes(in_channels: Sequence[int], map_sizes: Sequence[Sequence[int]] | None, what: str) -> None:
    if not in_channels:
        raise ConfigError(f"{what} needs at least one exit (in_channels is empty)")
    if map_sizes is not None and len(map_sizes) != len(in_channels):
        raise ConfigError(
            f"map_sizes has {len(map_sizes)} entries for {len(in_channels)} exits; give one (H, W) per exit"
        )


def mixed_pool(x: torch.Tensor, alpha: torch.Tensor, size: int) -> torch.Tensor:
    """SDN's mixed pooling: alpha * max + (1 - alpha) * avg, adaptively pooled to (size, size).

    Args:
        x: (B, C, H, W) feature map.
        alpha: scalar weight of max pooling, in [0, 1].
        size: output side.

    Returns:
        (B, C, size, size).

    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> mixed_pool(x, torch.tensor(0.5), 1).flatten().tolist()
    [11.25]
    """
    return torch.lerp(F.adaptive_avg_pool2d(x, size), F.adaptive_max_pool2d(x, size), alpha)


class PooledLinearExits(ExitHeads):
    """SDN internal classifiers (Kaya et al. 2019): learnable max/avg pooling mix, then one linear layer.

    The map is reduced to `pooled_size` x `pooled_size` (or kept when smaller) so the linear
    layer stays small whatever the stage's resolution.

    Args:
        in_channels: channels of the map each exit reads, one per exit.
        num_classes: classifier outputs.
        map_sizes: (H, W) of each exit's map; maps smaller than `pooled_size` are then kept
            as they are. None: every exit pools to `pooled_size` (smaller maps are upsampled
            by overlapping pooling windows, which only adds inputs to the linear layer).
        pooled_size: side of the pooled map (SDN reduces to about 4x4).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        map_sizes: Sequence[Sequence[int]] | None = None,
        pooled_size: int = 4,
    ) -> None:
        super().__init__()
        _check_sizes(in_channels, map_sizes, "PooledLinearExits")
        if pooled_size < 1:
            raise ConfigError(f"pooled_size must be >= 1, got {pooled_size}")
        self.num_exits = len(in_channels)
        sizes = [pooled_size] * self.num_exits
        if map_sizes is not None:
            sizes = [min(pooled_size, *hw) for hw in map_sizes]
        self.sizes = sizes
        # alpha = sigmoid(logit) in [0, 1]; 0 starts at SDN's even mix of max and average.
        self.mix_logits = nn.Parameter(torch.zeros(self.num_exits))
        self.classifiers = nn.ModuleList(
            nn.Linear(c * s * s, num_classes) for c, s in zip(in_channels, sizes, strict=True)
        )

    def alpha(self, index: int) -> torch.Tensor:
        """The weight of max pooling at exit `index`, in [0, 1]."""
        return torch.sigmoid(self.mix_logits[index])

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        pooled = mixed_pool(features, self.alpha(index), self.sizes[index])  # (B, C, s, s)
        return self.classifiers[index](pooled.flatten(1)), None  # (B, classes); not hierarchical


class ConvExits(ExitHeads):
    """BranchyNet-style branches (Teerapittayanon et al. 2016): conv-BN-ReLU, global average pool, linear.

    Each branch is an `nn.Sequential`, so `bofexits.models.folded.fold_batchnorm` folds its
    BatchNorm into the convolution like the backbone's.

    Args:
        in_channels: channels of the map each exit reads, one per exit.
        num_classes: classifier outputs.
        map_sizes: (H, W) of each exit's map: the conv has stride 2 where the smaller side is
            larger than `stride_above` and stride 1 elsewhere. None: stride 2 everywhere.
        width: output channels of each branch's conv (few, to stay cheap).
        stride_above: maps with both sides larger than this are convolved with stride 2.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        map_sizes: Sequence[Sequence[int]] | None = None,
        width: int = 16,
        stride_above: int = 4,
    ) -> None:
        super().__init__()
        _check_sizes(in_channels, map_sizes, "ConvExits")
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        self.num_exits = len(in_channels)
        strides = [2] * self.num_exits
        if map_sizes is not None:
            strides = [2 if min(hw) > stride_above else 1 for hw in map_sizes]
        self.strides = strides
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, width, 3, s, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(width, num_classes),
            )
            for c, s in zip(in_channels, strides, strict=True)
        )

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.heads[index](features), None  # (B, classes); not hierarchical
