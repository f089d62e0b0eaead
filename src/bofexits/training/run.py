"""What stays fixed for a whole training run, set up and checked before its first epoch.

`set_up` reads the splits, fills in what the data decides (classes of an image folder, the
input size of a `tv:` backbone), builds the seeded network and checks that the data fits it;
the loop then only reads `Run`. A frozen run on your own classifier's weights is fitted to the
file first (an image folder's channels) and its head checked against the data's classes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from bofexits.config import TrainConfig, check_config
from bofexits.data import ImageDataset, Transform, compose, random_crop, random_horizontal_flip
from bofexits.devices import resolve_device
from bofexits.errors import ConfigError
from bofexits.models.backbones import backbone_options
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.models.vision import WeightsFile, read_weights_file
from bofexits.training import distributed
from bofexits.training.distributed import World
from bofexits.training.loss import phases
from bofexits.training.splits import run_splits

__all__ = [
    "Run",
    "augmentation",
    "check_dataset",
    "check_head",
    "exit_weights",
    "fit_network_to_data",
    "fit_network_to_weights",
    "set_up",
    "user_classifier",
]

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What stays fixed for a whole run, built before its first epoch."""

    cfg: TrainConfig
    model: MultiExitNetwork
    train_set: ImageDataset
    val_set: ImageDataset
    test: ImageDataset
    device: torch.device
    weights: list[float]
    phases: list[str]
    transform: Transform | None
    ckpt_path: Path
    world: World = distributed.ONE_PROCESS
    finetune_weights: list[float] | None = None  # None: `weights`

    def weights_of(self, phase: str) -> list[float]:
        """The loss weight of each exit in `phase` (final last)."""
        if phase == "finetune" and self.finetune_weights is not None:
            return self.finetune_weights
        return self.weights

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.cfg.batch_size)


def set_up(cfg: TrainConfig, ckpt_path: Path, world: World = distributed.ONE_PROCESS) -> Run:
    """Threads, device, the three splits and a freshly built (seeded) network, all checked.

    Every rank builds the same network from the same seed; under torchrun each rank takes the
    GPU of its LOCAL_RANK.
    """
    check_config(cfg)  # the Python API skips `resolve_config`, which checks it for the CLI
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    user = user_classifier(cfg)
    if user is not None:
        cfg = fit_network_to_weights(cfg, user)
    train_set, val_set, test = run_splits(cfg)
    cfg = fit_network_to_data(cfg, train_set)
    if user is not None:
        check_head(user, len(train_set.classes))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    weights = exit_weights(cfg, model.num_exits)
    tuning = exit_weights(cfg, model.num_exits, "finetune_weights") if cfg.finetune_weights else None
    check_dataset(model, train_set)
    transform = augmentation(train_set, cfg.crop_padding, flip=cfg.flip) if cfg.augment else None
    return Run(
        cfg,
        model,
        train_set,
        val_set,
        test,
        device,
        weights,
        phases(cfg),
        transform,
        ckpt_path,
        world,
        tuning,
    )


def exit_weights(cfg: TrainConfig, num_exits: int, key: str = "exit_weights") -> list[float]:
    """The loss weight of each exit (final last): `cfg.<key>`, or 1 each, checked against the network."""
    given = getattr(cfg, key)
    weights = given if given is not None else [1.0] * num_exits
    if len(weights) != num_exits or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"{key} needs {num_exits} non-negative values (final exit last), got {weights}")
    return [float(w) for w in weights]


def fit_network_to_data(cfg: TrainConfig, train_set: ImageDataset) -> TrainConfig:
    """`cfg` with what the data decides filled in, so the stored config rebuilds the same network.

    An image folder's classes are its sub-folders; a backbone that takes any input size (the
    `tv:` ones) takes the dataset's square images at their size unless `image_size` is set.
    """
    model_cfg = cfg.model
    if cfg.dataset == "image-folder" and model_cfg.num_classes != len(train_set.classes):
        model_cfg = dataclasses.replace(model_cfg, num_classes=len(train_set.classes))
    height, width = (int(n) for n in train_set.images.shape[-2:])
    any_size = "image_size" in backbone_options(model_cfg.backbone)
    if any_size and model_cfg.image_size is None and height == width:
        model_cfg = dataclasses.replace(model_cfg, image_size=height)
    return cfg if model_cfg == cfg.model else dataclasses.replace(cfg, model=model_cfg)


def user_classifier(cfg: TrainConfig) -> WeightsFile | None:
    """What a frozen run's own classifier (`backbone_weights` on a `tv:` backbone) fixes; None otherwise.

    In frozen mode the file's network is kept as it is, head included: its head is the final
    exit, and nothing trains it.
    """
    m = cfg.model
    if cfg.mode != "frozen" or m.backbone_weights is None or not m.backbone.startswith("tv:"):
        return None
    return read_weights_file(m.backbone.removeprefix("tv:"), m.backbone_weights)


def fit_network_to_weights(cfg: TrainConfig, weights: WeightsFile) -> TrainConfig:
    """`cfg` taking the input channels of your classifier, so an image folder loads as it was trained on.

    An image folder loads as grey for 1 channel and RGB for 3 (`training.splits`): the RGB
    network on grey loading would see colour images turned grey. A grey folder loaded as RGB
    gives each pixel's grey level on all three channels, which is what the one-channel form
    (kernels summed over RGB) computes anyway. Other datasets have fixed channels (grey
    Fashion-MNIST is fed to an RGB network through that one-channel form).
    """
    if cfg.dataset != "image-folder" or cfg.model.in_channels == weights.in_channels:
        return cfg
    log.info(
        "frozen mode keeps your classifier as it is: images load with the %d channels its first convolution "
        "(%s) takes, not %d",
        weights.in_channels, weights.first_conv, cfg.model.in_channels,
    )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_channels=weights.in_channels))


def check_head(weights: WeightsFile, data_classes: int) -> None:
    """Your classifier's head, the frozen run's final exit, has the data's class count, or a `ConfigError`.

    Elsewhere a head of another size is replaced by a fresh one that training learns; in
    frozen mode nothing would train it, and the final exit would guess.
    """
    if weights.num_classes != data_classes:
        raise ConfigError(
            f"your classifier's head ({weights.head}) has {weights.num_classes} outputs but the data has "
            f"{data_classes} classes; in frozen mode that head is the final exit and is not trained. Pass the "
            f"weights of a model trained on these {data_classes} classes, or train a new head with --mode "
            "two-phase (or joint)"
        )


def augmentation(data: ImageDataset, padding: int, *, flip: bool = True) -> Transform | None:
    """A random crop if padding > 0, then a horizontal flip if `flip`; None when neither applies.

    The crop pads with normalised black (for colour images, black averaged over the channels:
    `random_crop` takes one fill value).
    """
    parts: list[Transform] = []
    if padding > 0:
        fill = sum(-m / s for m, s in zip(data.mean, data.std, strict=True)) / len(data.mean)
        parts.append(partial(random_crop, padding=padding, fill=fill))
    if flip:
        parts.append(partial(random_horizontal_flip, p=0.5))
    return compose(*parts) if parts else None


def check_dataset(model: MultiExitNetwork, data: ImageDataset) -> None:
    """The dataset's image shape and class count are the network's, or a `ConfigError` saying what to set."""
    shape = tuple(data.images.shape[1:])
    if shape != model.input_shape:
        raise ConfigError(
            f"the dataset's images are {shape} but the network expects {model.input_shape}; "
            "pick a backbone for this input shape"
        )
    if len(data.classes) != model.num_classes:
        raise ConfigError(
            f"the dataset has {len(data.classes)} classes, the network {model.num_classes}; "
            "set num_classes to match"
        )
