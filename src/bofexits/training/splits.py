"""A run's data: its dataset fitted to its network, split as training splits it.

Every command that reads a run's data (train, evaluate, sweep, tune, compare, demo) goes
through here, so they all agree on the images and on the validation split. It sits in
`training` because it reads both the run's config and its network; `data` below it only
knows datasets by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bofexits.config import TrainConfig
from bofexits.data import ImageDataset, load_image_folder
from bofexits.data.registry import load_dataset
from bofexits.errors import ConfigError, DataError
from bofexits.models.build import configured_backbone

__all__ = ["load_run_data", "run_splits"]


def load_run_data(cfg: TrainConfig, root: str | Path | None = None) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of a run: its dataset, with an image folder fitted to the run's network.

    Image folders have no fixed shape, so their images are resized to the backbone's input
    size and converted to its channels (grey for 1, RGB for 3); every command that reads a
    run's data (train, evaluate, sweep, tune, demo) goes through here so they all agree.
    """
    train, test = _load_run_data(cfg, root if root is not None else cfg.data_dir)
    for part, data in (("training", train), ("test", test)):
        if len(data) == 0:  # a model "trained" on nothing, or accuracy over no images, means nothing
            raise DataError(f"the {cfg.dataset} {part} split has no images; check the data files")
    return train, test


def _load_run_data(cfg: TrainConfig, root: str | Path | None) -> tuple[ImageDataset, ImageDataset]:
    if cfg.dataset != "image-folder" or root is None:
        return load_dataset(cfg.dataset, root)  # an image folder without a root: the registry says what to pass
    _, h, w = configured_backbone(cfg.model, load_weights=False).input_shape
    if cfg.model.in_channels not in (1, 3):
        raise ConfigError(
            f"image folders load as grey (1 channel) or RGB (3), not {cfg.model.in_channels} channels"
        )
    return load_image_folder(root, image_size=(h, w), mode="L" if cfg.model.in_channels == 1 else "RGB")


def run_splits(
    cfg: TrainConfig, root: str | Path | None = None
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(train, validation, test) of a run, split exactly as training splits them.

    The validation split is held out of the training files (after the `limit_train` cut) with
    the run's seed, so tuning and policy comparisons can rebuild it and never touch the test set.
    """
    train_full, test = load_run_data(cfg, root)
    if cfg.limit_train:
        train_full = train_full.subset(torch.arange(min(cfg.limit_train, len(train_full))))
    train, val = train_full.split(cfg.val_fraction, seed=cfg.seed)
    return train, val, test
