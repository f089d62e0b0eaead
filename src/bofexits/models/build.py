"""Build a `MultiExitNetwork` from a `ModelConfig` (reference backbone + exit heads)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from bofexits.config import ModelConfig
from bofexits.errors import ConfigError
from bofexits.models.backbones import Backbone, create_backbone
from bofexits.models.baseline_exits import ConvExits, PooledLinearExits
from bofexits.models.exits import BoFExits, ExitHeads
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.models.placement import candidate_pools, fine_units, regroup, unit_shapes
from bofexits.options import EXIT_HEADS

__all__ = ["EXIT_HEADS", "build_model", "configured_backbone", "placed_backbone"]



@torch.no_grad()
def _map_sizes(stages: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, int]]:
    """(H, W) of the map after each stage but the last (the baseline heads size themselves on it)."""
    x = torch.zeros(1, *input_shape)
    sizes = []
    training = [s.training for s in stages]
    for stage in stages[:-1]:
        x = stage.eval()(x)
        sizes.append((int(x.shape[-2]), int(x.shape[-1])))
    for stage, mode in zip(stages, training, strict=True):
        stage.train(mode)
    return sizes


def configured_backbone(cfg: ModelConfig, *, load_weights: bool = True) -> Backbone:
    """The backbone `cfg` names, with the options `cfg` sets (unset ones keep the builder's defaults).

    Args:
        cfg: the network's config.
        load_weights: read `cfg.backbone_weights`; False where the weights are replaced anyway
            (a checkpoint being loaded) or not needed (only the input shape is), so the file
            need not be at hand then.
    """
    kwargs: dict[str, object] = {"num_classes": cfg.num_classes, "in_channels": cfg.in_channels}
    if cfg.widths is not None:
        kwargs["widths"] = tuple(cfg.widths)
    if cfg.image_size is not None:
        kwargs["image_size"] = cfg.image_size
    if cfg.backbone_weights is not None and load_weights:
        kwargs["weights"] = cfg.backbone_weights
    return create_backbone(cfg.backbone, **kwargs)


def placed_backbone(backbone: Backbone, points: Sequence[int]) -> Backbone:
    """`backbone` regrouped into stages ending after the units at `points` (`ModelConfig.exit_points`).

    The exits' pre-pool factors follow the backbone's defaults (`candidate_pools`): an exit
    on a larger map pools down to the largest side a default exit quantises.
    """
    units = fine_units(backbone.stages)
    stages = regroup(units, points)
    shapes = unit_shapes(units, backbone.input_shape)
    default_sides = [max(h, w) for h, w in _map_sizes(backbone.stages, backbone.input_shape)]
    pools = candidate_pools([max(shapes[p][1:]) for p in points], default_sides, backbone.exit_pools)
    return Backbone(stages, backbone.input_shape, exit_pools=pools)


def build_model(cfg: ModelConfig, *, load_weights: bool = True) -> MultiExitNetwork:
    """The backbone named in `cfg` with exit heads (`cfg.exit_head`) after each stage but the last.

    `load_weights`: see `configured_backbone`.
    """
    if cfg.exit_head not in EXIT_HEADS:
        raise ConfigError(f"unknown exit head {cfg.exit_head!r}; choose one of {', '.join(EXIT_HEADS)}")
    backbone = configured_backbone(cfg, load_weights=load_weights)
    if cfg.exit_points is not None:
        backbone = placed_backbone(backbone, cfg.exit_points)
    pools = cfg.exit_pools if cfg.exit_pools is not None else backbone.exit_pools
    if len(pools) != len(backbone.stages) - 1:
        raise ConfigError(f"exit_pools needs {len(backbone.stages) - 1} entries, got {pools}")

    exits: Callable[[Sequence[int]], ExitHeads]
    if cfg.exit_head == "bof":

        def exits(channels: Sequence[int]) -> ExitHeads:
            return BoFExits(
                channels,
                cfg.num_classes,
                codewords=cfg.codewords,
                membership=cfg.membership,
                squared=cfg.squared,
                spatial_level=cfg.spatial_level,
                reduce_channels=cfg.reduce_channels,
                pools=pools,
                aggregation=cfg.aggregation,
                shared_classifier=cfg.shared_classifier,
                shared_width=cfg.shared_width,
            )

    else:
        head = PooledLinearExits if cfg.exit_head == "pooled" else ConvExits
        sizes: list[tuple[int, int]] | None
        try:
            sizes = _map_sizes(backbone.stages, backbone.input_shape)
        except RuntimeError:  # MultiExitNetwork raises the worded ConfigError for this below
            sizes = None

        def exits(channels: Sequence[int]) -> ExitHeads:
            return head(channels, cfg.num_classes, map_sizes=sizes)

    return MultiExitNetwork(backbone.stages, exits, backbone.input_shape)
