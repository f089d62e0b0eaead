"""Build a `MultiExitNetwork` from a `ModelConfig` (reference backbone + exit heads)."""

from __future__ import annotations

from collections.abc import Sequence

from .backbones import create_backbone
from .config import ModelConfig
from .errors import ConfigError
from .exits import BoFExits, ExitHeads
from .multiexit import MultiExitNetwork

__all__ = ["build_model"]


def build_model(cfg: ModelConfig) -> MultiExitNetwork:
    """The reference backbone named in `cfg` with BoF exits after each of its stages but the last."""
    kwargs: dict[str, object] = {"num_classes": cfg.num_classes, "in_channels": cfg.in_channels}
    if cfg.widths is not None:
        kwargs["widths"] = tuple(cfg.widths)
    backbone = create_backbone(cfg.backbone, **kwargs)
    pools = cfg.exit_pools if cfg.exit_pools is not None else backbone.exit_pools
    if len(pools) != len(backbone.stages) - 1:
        raise ConfigError(f"exit_pools needs {len(backbone.stages) - 1} entries, got {pools}")

    def exits(channels: Sequence[int]) -> ExitHeads:
        return BoFExits(
            channels,
            cfg.num_classes,
            codewords=cfg.codewords,
            membership=cfg.membership,  # type: ignore[arg-type]
            squared=cfg.squared,
            spatial_level=cfg.spatial_level,
            reduce_channels=cfg.reduce_channels,
            pools=pools,
            aggregation=cfg.aggregation,  # type: ignore[arg-type]
            shared_classifier=cfg.shared_classifier,
        )

    return MultiExitNetwork(backbone.stages, exits, backbone.input_shape)
