"""Datasets (Fashion-MNIST, MNIST, CIFAR-10/100, SVHN, image folders), IDX file I/O and batch augmentations."""

from __future__ import annotations

from bofexits.data.cifar import load_cifar10, load_cifar100
from bofexits.data.dataset import ImageDataset
from bofexits.data.fashion_mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from bofexits.data.idx import read_idx, write_idx
from bofexits.data.image_folder import ImageMode, image_to_tensor, load_image_folder, read_image, split_files
from bofexits.data.svhn import SVHN_CLASSES, load_svhn
from bofexits.data.transforms import Transform, compose, normalize, random_crop, random_horizontal_flip

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "SVHN_CLASSES",
    "ImageDataset",
    "ImageMode",
    "Transform",
    "compose",
    "image_to_tensor",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist",
    "load_svhn",
    "normalize",
    "random_crop",
    "random_horizontal_flip",
    "read_idx",
    "read_image",
    "split_files",
    "write_idx",
]
