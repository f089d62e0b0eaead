"""Dataset registry: names the CLI and configs accept, mapped to their loaders.

A run's data (its dataset fitted to its network, and its train/val/test split) is
`bofexits.training.splits`: it reads the run's config and network, which sit above `data`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bofexits.data import (
    ImageDataset,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    load_svhn,
)
from bofexits.errors import ConfigError

__all__ = ["dataset_info", "list_datasets", "load_dataset"]

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
