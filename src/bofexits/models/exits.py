"""Exit heads for exits 1..S-1; BoF exits share one histogram space and one classifier (docs/method.md §3).

Hierarchical BoF early exits (Passalis et al., Pattern Recognition 2020): exit i classifies
the aggregate of the histograms of exits 1..i, carried forward so that a sample going
deeper reuses everything it computed, and one linear classifier serves every exit, so an
extra exit costs only its codebook.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bofexits.errors import ConfigError
from bofexits.models.bof import BoFPooling
from bofexits.options import AGGREGATIONS, Aggregation, Membership  # re-exported: the names live in options

__all__ = ["Aggregation", "BoFExits", "ExitHeads", "aggregate_histograms"]



def aggregate_histograms(
    previous: torch.Tensor | None, current: torch.Tensor, index: int, mode: str
) -> torch.Tensor:
    """Carry the histogram aggregate from exit index-1 to exit index (0-based).

    "mean": h_i = (i h_{i-1} + s_i) / (i + 1); "sum": h_i = h_{i-1} + s_i; "none": s_i.

    >>> aggregate_histograms(torch.tensor([2.0]), torch.tensor([4.0]), 1, "mean").tolist()
    [3.0]
    """
    if previous is None or mode == "none":
        return current
    if mode == "sum":
        return previous + current
    return previous.mul(index / (index + 1)).add_(current, alpha=1.0 / (index + 1))


class ExitHeads(nn.Module):
    """Interface of the heads at exits 1..S-1: one `step` per exit, with a carried state.

    Training, evaluation and the runtime all call `step`, so the maths exists once.
    """

    num_exits: int

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, classes) of exit `index` and the state to hand to the next exit."""
        raise NotImplementedError

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits of every exit from the feature maps after stages 1..S-1."""
        state: torch.Tensor | None = None
        outputs = []
        for i, f in enumerate(features):
            logits, state = self.step(i, f, state)
            outputs.append(logits)
        return outputs

    def init_from_features(
        self, features: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> None:
        """Data-dependent initialisation before exit training (default: none)."""


class BoFExits(ExitHeads):
    """BoF exits after stages 1..S-1 with a shared histogram space.

    Args:
        in_channels: channels of the feature map each exit reads, one per exit.
        num_classes: classifier outputs.
        codewords: K, the same for all exits (the shared histogram space).
        membership, squared, spatial_level, reduce_channels: see `BoFPooling`.
        pools: per-exit average-pool factor before quantising (1 = none).
        aggregation: "mean" (running mean, default), "sum", or "none" (independent exits).
        shared_classifier: one classifier for all exits (default) or one per exit.
        shared_width: one RBF width per exit instead of one per codeword (see `BoFPooling`).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        codewords: int = 32,
        membership: Membership = "rbf",
        squared: bool = True,
        spatial_level: int = 0,
        reduce_channels: int | None = None,
        pools: Sequence[int] | None = None,
        aggregation: Aggregation = "mean",
        shared_classifier: bool = True,
        shared_width: bool = False,
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
        if not in_channels:
            raise ConfigError("BoFExits needs at least one exit (in_channels is empty)")
        pools = list(pools) if pools is not None else [1] * len(in_channels)
        if len(pools) != len(in_channels):
            raise ConfigError(
                f"pools has {len(pools)} entries for {len(in_channels)} exits; give one per exit"
            )
        self.num_exits = len(in_channels)
        self.aggregation = aggregation
        self.codewords = codewords
        self.bof = nn.ModuleList(
            BoFPooling(
                c,
                codewords,
                membership=membership,
                squared=squared,
                spatial_level=spatial_level,
                reduce_channels=reduce_channels,
                pool=p,
                shared_width=shared_width,
            )
            for c, p in zip(in_channels, pools, strict=True)
        )
        dim = codewords * (4 if spatial_level else 1)  # = BoFPooling.out_features
        n_classifiers = 1 if shared_classifier else self.num_exits
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(n_classifiers))

    def histogram(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """(B, K') histogram of exit `index` alone, before aggregation (K' = K, or 4K at spatial level 1)."""
        # Rescale by K so histogram entries are O(1): a raw histogram (entries ~1/K) barely trains.
        pooling: BoFPooling = self.bof[index]  # type: ignore[assignment]
        return pooling(features) * self.codewords

    def classify(self, index: int, aggregate: torch.Tensor) -> torch.Tensor:
        """(B, classes) logits of exit `index` from its aggregated histogram."""
        return self.classifiers[0 if len(self.classifiers) == 1 else index](aggregate)

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        agg = aggregate_histograms(state, self.histogram(index, features), index, self.aggregation)
        return self.classify(index, agg), agg

    @torch.no_grad()
    def init_from_features(
        self, features: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> None:
        """k-means-initialise each exit's codebook from feature maps of its stage."""
        for pooling, f in zip(self.bof, features, strict=True):
            pooling.init_from_features(f, generator=generator)  # type: ignore[operator]
