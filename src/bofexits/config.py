"""Resolved configuration of a run: what builds the network and what trains it.

Stored verbatim in every checkpoint and dumped to the run folder, so a run can be rebuilt
and resumed from its files alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bofexits.errors import ConfigError

__all__ = ["ModelConfig", "TrainConfig", "from_dict"]


@dataclass
class ModelConfig:
    """Backbone and exit heads.

    Attributes:
        backbone: registered backbone name (`bofexits backbones`).
        num_classes: classifier outputs.
        in_channels: image channels.
        widths: backbone stage widths (None: the backbone's default).
        codewords: K, shared by all BoF exits.
        membership: "rbf" or "logistic".
        squared: RBF on squared distances.
        spatial_level: 0 or 1.
        reduce_channels: optional 1x1 channel reduction before quantising.
        exit_pools: per-exit pre-pool factors (None: the backbone's defaults).
        aggregation: "mean", "sum" or "none" (independent exits).
        shared_classifier: one classifier for all exits.
        exit_head: "bof" (the method), or a baseline head for side-by-side numbers: "pooled"
            (SDN, mixed pooling + linear) or "conv" (BranchyNet-style conv branch). The
            codebook options above apply to "bof" only.
    """

    backbone: str = "vgg28"
    num_classes: int = 10
    in_channels: int = 1
    widths: list[int] | None = None
    codewords: int = 32
    membership: str = "rbf"
    squared: bool = True
    spatial_level: int = 1
    reduce_channels: int | None = None
    exit_pools: list[int] | None = None
    aggregation: str = "mean"
    shared_classifier: bool = True
    exit_head: str = "bof"


@dataclass
class TrainConfig:
    """How the exits (and the backbone) are trained, calibrated and checkpointed.

    Attributes:
        mode: "joint" (backbone + exits, weighted loss), "frozen" (exits only, backbone from
            `backbone_checkpoint`), or "two-phase" (backbone alone, then exits on it frozen).
        epochs: epochs of joint/frozen training, or of phase 1 in two-phase mode.
        exit_epochs: epochs of exit training in two-phase mode.
        lr: peak learning rate of the backbone (joint and backbone phases).
        exit_lr: peak learning rate when only the exits train (frozen mode, two-phase phase 2);
            BoF exits on a frozen backbone learned far faster at 3e-2 than at 3e-3.
        exit_weights: loss weight per exit, final exit last (None: all 1).
        augment: random augmentation: horizontal flips (when `flip`) and crops (when
            `crop_padding` > 0); False turns both off.
        flip: random horizontal flips when augmenting; off for digits (MNIST, SVHN), whose
            mirror images are other symbols.
        crop_padding: random-crop padding in pixels; 0 (default) because on short schedules the
            crops slowed convergence (Fashion-MNIST, 2 epochs: 87.9% with 2-px crops, 90.6% without).
        calibration_split: "train" (the paper) or "val" (held-out).
        score / variant: the confidence score and rule variant the calibration serves.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    mode: str = "two-phase"
    epochs: int = 10
    exit_epochs: int = 4
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-3
    exit_lr: float = 3e-2
    weight_decay: float = 5e-4
    momentum: float = 0.9
    exit_weights: list[float] | None = None
    augment: bool = True
    flip: bool = True
    crop_padding: int = 0
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    kmeans_images: int = 512
    calibration_split: str = "train"
    score: str = "max_prob"
    variant: str = "conditional"
    backbone_checkpoint: str | None = None
    limit_train: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a `TrainConfig` from its dict form, refusing unknown keys (typos, other versions)."""
    data = dict(data)
    model = dict(data.pop("model", {}))
    _check_keys(ModelConfig, model, "model")
    _check_keys(TrainConfig, data, "train")
    return TrainConfig(**data, model=ModelConfig(**model))


def _check_keys(cls: type, data: dict[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)} - {"model"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} config keys {unknown}; known keys: {', '.join(sorted(known))}")
