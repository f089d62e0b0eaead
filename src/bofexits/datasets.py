"""Dataset registry: names the CLI and configs accept, mapped to their loaders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .data import ImageDataset, load_fashion_mnist, load_mnist
from .errors import ConfigError

__all__ = ["list_datasets", "load_dataset"]

Loader = Callable[..., tuple[ImageDataset, ImageDataset]]
_REGISTRY: dict[str, Loader] = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist}


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`.

    >>> "fashion-mnist" in list_datasets()
    True
    """
    return sorted(_REGISTRY)


def load_dataset(
    name: str, root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) of a registered dataset, from `root`, the standard places, or a download."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _REGISTRY[name](root, download=download)
