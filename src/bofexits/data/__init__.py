"""Datasets, IDX file I/O and batch augmentations used to train and evaluate early-exit networks."""

from __future__ import annotations

from bofexits.data.dataset import ImageDataset
from bofexits.data.fashion_mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from bofexits.data.idx import read_idx, write_idx
from bofexits.data.transforms import Transform, compose, normalize, random_crop, random_horizontal_flip

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ImageDataset",
    "Transform",
    "compose",
    "load_fashion_mnist",
    "load_mnist",
    "normalize",
    "random_crop",
    "random_horizontal_flip",
    "read_idx",
    "write_idx",
]
