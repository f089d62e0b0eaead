"""SVHN cropped digits (format 2) from the official ``.mat`` files, as in-memory :class:`ImageDataset` pairs.

The files are ``train_32x32.mat`` and ``test_32x32.mat`` from http://ufldl.stanford.edu/housenumbers/:
MATLAB v5 files holding ``X``, a ``(32, 32, 3, N)`` uint8 array, and ``y``, an ``(N, 1)`` array of
labels 1..10 where 10 stands for the digit 0. Reading them needs scipy (``pip install bofexits[svhn]``),
imported only when SVHN is loaded. The ``extra`` split (531,131 easier images, 1.3 GB) is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bofexits.data._files import DatasetFiles, RemoteFile, locate
from bofexits.data.dataset import ImageDataset
from bofexits.errors import DataError

__all__ = ["SVHN_CLASSES", "SVHN_FILES", "load_svhn"]

logger = logging.getLogger(__name__)

#: Label ``i`` is the digit ``i`` (the files' label 10 is mapped to 0).
SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

SVHN_FILES = DatasetFiles(
    name="svhn",
    title="SVHN",
    files=(
        RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ),
    mirrors=("http://ufldl.stanford.edu/housenumbers/",),
)

# Per-channel mean and std of the training pixels / 255, the values the literature uses.
_MEAN = (0.4377, 0.4438, 0.4728)
_STD = (0.1980, 0.2010, 0.1970)


def _require_loadmat() -> Callable[..., dict[str, Any]]:
    """scipy's MATLAB reader, imported only now: the other datasets do not need scipy."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise DataError(
            "reading SVHN's .mat files needs scipy, which is not installed: run `pip install scipy` "
            "(or `pip install bofexits[svhn]`)"
        ) from exc
    return loadmat  # type: ignore[no-any-return]


def _loadmat(path: Path) -> dict[str, Any]:
    loadmat = _require_loadmat()
    try:
        return loadmat(path, variable_names=("X", "y"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; check the path or download SVHN again") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError... on damaged files
        raise DataError(
            f"{path} is not a readable SVHN .mat file ({type(exc).__name__}: {exc}); it is corrupt or "
            "truncated: delete it and download it again"
        ) from exc


def _read_split(path: Path, name: str) -> ImageDataset:
    """One ``.mat`` file -> images ``(N, 3, 32, 32)`` uint8 and labels 0..9 (10 -> 0), checked."""
    mat = _loadmat(path)
    if "X" not in mat or "y" not in mat:
        raise DataError(
            f"{path} lacks the variables X and y (it has {', '.join(k for k in mat if not k.startswith('__'))}); "
            "it is not an SVHN cropped-digits file: download train_32x32.mat / test_32x32.mat again"
        )
    images, raw = mat["X"], mat["y"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise DataError(
            f"{path}: X is {images.dtype} {images.shape}, expected uint8 (32, 32, 3, N); it is not an SVHN "
            "cropped-digits file: delete it and download it again"
        )
    n = images.shape[3]
    if raw.size != n or raw.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: {n} images but y is {raw.dtype} {raw.shape}; the file is damaged: delete it and download "
            "it again"
        )
    labels = raw.reshape(-1).astype(np.int64)
    if n and (int(labels.min()) < 1 or int(labels.max()) > 10 or not np.array_equal(labels, raw.reshape(-1))):
        raise DataError(
            f"{path}: labels must be the integers 1..10 (10 = digit 0), found values in [{raw.min()}, {raw.max()}]; "
            "the file is damaged or from another dataset: download it again"
        )
    labels[labels == 10] = 0
    return ImageDataset(
        images=torch.from_numpy(
            np.ascontiguousarray(images.transpose(3, 2, 0, 1))
        ),  # (32, 32, 3, N) -> (N, 3, 32, 32)
        labels=torch.from_numpy(labels),
        classes=SVHN_CLASSES,
        mean=_MEAN,
        std=_STD,
        name=name,
    )


def load_svhn(root: str | Path | None = None, *, download: bool = True) -> tuple[ImageDataset, ImageDataset]:
    """Load SVHN cropped digits as ``(train, test)``: 73,257 and 26,032 32x32 colour images, 10 classes.

    Args:
        root: directory holding ``train_32x32.mat`` and ``test_32x32.mat`` (directly or under ``svhn/``),
            e.g. from ``--data-dir``; searched before ``$BOFEXITS_DATA/svhn``, ``~/.cache/bofexits/svhn``
            and ``/usr/share/datasets/svhn``.
        download: fetch the files (MD5-checked) into the cache when no local copy exists.

    Returns:
        ``(train, test)`` with images ``(N, 3, 32, 32)`` uint8, labels 0..9 (the files' 10 is the digit 0),
        mean ``(0.4377, 0.4438, 0.4728)`` and std ``(0.1980, 0.2010, 0.1970)``.

    Raises:
        DataError: scipy is missing, the files cannot be found or fetched, or a file is corrupt.
    """
    _require_loadmat()  # fail before a 240 MB download that could not be read
    paths = locate(SVHN_FILES, root, download=download)
    train = _read_split(paths["train_32x32.mat"], "svhn/train")
    test = _read_split(paths["test_32x32.mat"], "svhn/test")
    logger.info("loaded SVHN: %d train, %d test images", len(train), len(test))
    return train, test
