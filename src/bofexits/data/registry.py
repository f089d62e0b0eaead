"""Dataset registry: names the CLI and configs accept, mapped to their loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bofexits.config import TrainConfig
from bofexits.data import (
    ImageDataset,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_svhn,
)
from bofexits.errors import ConfigError, DataError
from bofexits.models.build import configured_backbone

__all__ = ["dataset_info", "list_datasets", "load_dataset", "load_run_data", "run_splits"]

Loader = Callable[..., tuple[ImageDataset, ImageDataset]]


def _image_folder(
    root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """`load_image_folder` behind the registry's signature; there is nothing to download."""
    if root is None:
        raise ConfigError(
            "dataset image-folder reads your own images: pass --data-dir DIR (root=...), a folder with one "
            "sub-folder of PNG/JPEG images per class (or train/<class>/ and test/<class>/)"
        )
    return load_image_folder(root)


_REGISTRY: dict[str, Loader] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "fashion-mnist": load_fashion_mnist,
    "image-folder": _image_folder,
    "mnist": load_mnist,
    "svhn": load_svhn,
}
# (input shape, number of classes) known without reading any file; None where the files decide.
_INFO: dict[str, tuple[tuple[int, int, int] | None, int | None]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "fashion-mnist": ((1, 28, 28), 10),
    "image-folder": (None, None),
    "mnist": ((1, 28, 28), 10),
    "svhn": ((3, 32, 32), 10),
}


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`.

    >>> "fashion-mnist" in list_datasets()
    True
    """
    return sorted(_REGISTRY)


def dataset_info(name: str) -> tuple[tuple[int, int, int] | None, int | None]:
    """`(input shape (C, H, W), number of classes)` of a registered dataset, without loading it.

    Lets a network be built (or a mismatch reported) before the files are read; `None` where only
    the files can tell (`image-folder`).

    >>> dataset_info("cifar100")
    ((3, 32, 32), 100)
    """
    _check(name)
    return _INFO[name]


def load_dataset(
    name: str, root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of a registered dataset, from `root`, the standard places, or a download."""
    _check(name)
    return _REGISTRY[name](root, download=download)


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
    if cfg.dataset != "image-folder":
        return load_dataset(cfg.dataset, root)
    if root is None:
        return _image_folder(None)
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
