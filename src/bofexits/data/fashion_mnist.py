"""Fashion-MNIST (and MNIST, which shares its file format) as in-memory :class:`ImageDataset` pairs.

Files are looked up locally first (``root``, ``$BOFEXITS_DATA``, the user cache, the Debian
``dataset-fashion-mnist`` package) and only downloaded, with MD5 checks, when none is complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bofexits.data._files import DatasetFiles, RemoteFile, locate
from bofexits.data.dataset import ImageDataset
from bofexits.data.idx import read_idx
from bofexits.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "MNIST_CLASSES",
    "MNIST_FILES",
    "load_fashion_mnist",
    "load_mnist",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

FASHION_MNIST_FILES = DatasetFiles(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    debian_package="dataset-fashion-mnist",
)

MNIST_FILES = DatasetFiles(
    name="mnist",
    title="MNIST",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    debian_package=None,
)


def _read_split(
    images_path: Path, labels_path: Path, classes: tuple[str, ...], mean: float, std: float, name: str
) -> ImageDataset:
    """Read one images/labels file pair, checking they agree before building the dataset."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path} holds {images.dtype} {images.shape}, expected uint8 (N, H, W) images; "
            "check the file is the images file, or delete it and download again"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path} holds {labels.dtype} {labels.shape}, expected uint8 (N,) labels; "
            "check the file is the labels file, or delete it and download again"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
            "the files come from different sources: delete them and download again"
        )
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(
            f"{labels_path} has label {int(labels.max())} but {name} has {len(classes)} classes; "
            "delete the file and download it again"
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        mean=(mean,),
        std=(std,),
        name=name,
    )


def _load_idx_pair(
    spec: DatasetFiles,
    root: str | Path | None,
    download: bool,
    classes: tuple[str, ...],
    mean: float,
    std: float,
) -> tuple[ImageDataset, ImageDataset]:
    paths = locate(spec, root, download=download)
    train = _read_split(
        paths["train-images-idx3-ubyte.gz"],
        paths["train-labels-idx1-ubyte.gz"],
        classes,
        mean,
        std,
        f"{spec.name}/train",
    )
    test = _read_split(
        paths["t10k-images-idx3-ubyte.gz"],
        paths["t10k-labels-idx1-ubyte.gz"],
        classes,
        mean,
        std,
        f"{spec.name}/test",
    )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"{spec.title} train images are {tuple(train.images.shape[2:])} but test images are "
            f"{tuple(test.images.shape[2:])}; the files are mixed from different datasets: replace them"
        )
    logger.info("loaded %s: %d train, %d test images", spec.title, len(train), len(test))
    return train, test


def load_fashion_mnist(
    root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """Load Fashion-MNIST as ``(train, test)``: 60,000 and 10,000 28x28 grey images, 10 classes.

    Args:
        root: directory holding the four IDX files (gzipped or not), e.g. from ``--data-dir``;
            searched before ``$BOFEXITS_DATA/fashion-mnist``, ``~/.cache/bofexits/fashion-mnist``
            and ``/usr/share/datasets/fashion-mnist``.
        download: fetch the files into the cache when no complete local copy exists.

    Returns:
        ``(train, test)`` with images ``(N, 1, 28, 28)`` uint8, mean ``(0.2860,)``, std ``(0.3530,)``.

    Raises:
        DataError: the files cannot be found or fetched, or a file is corrupt.
    """
    return _load_idx_pair(FASHION_MNIST_FILES, root, download, FASHION_MNIST_CLASSES, 0.2860, 0.3530)


def load_mnist(root: str | Path | None = None, *, download: bool = True) -> tuple[ImageDataset, ImageDataset]:
    """Load MNIST digits as ``(train, test)``; same search order and format as :func:`load_fashion_mnist`.

    Args:
        root: directory holding the four IDX files (gzipped or not); searched first.
        download: fetch the files into ``~/.cache/bofexits/mnist`` when no local copy exists.

    Returns:
        ``(train, test)`` with images ``(N, 1, 28, 28)`` uint8, mean ``(0.1307,)``, std ``(0.3081,)``.

    Raises:
        DataError: the files cannot be found or fetched, or a file is corrupt.
    """
    return _load_idx_pair(MNIST_FILES, root, download, MNIST_CLASSES, 0.1307, 0.3081)
