"""CIFAR-10 and CIFAR-100 from the official python-pickle batches, as in-memory :class:`ImageDataset` pairs.

The files are the authors' ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``
(https://www.cs.toronto.edu/~kriz/cifar.html): pickled dicts holding a ``(N, 3072)`` uint8 array
(1024 red, then 1024 green, then 1024 blue values, each a 32x32 image in row-major order) and a
list of labels. Either the archive or the folder it unpacks to is accepted, found in the same places
as every dataset (``root``, ``$BOFEXITS_DATA``, the user cache, ``/usr/share/datasets``), and the
archive is downloaded (MD5-checked) and unpacked into the cache as the last resort.

Unpickling can run arbitrary code, so the batches are read with an unpickler that only builds numpy
arrays and plain Python values, and anything but the expected dict layout is rejected.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bofexits.data._files import DatasetFiles, RemoteFile, locate, read_members
from bofexits.data.dataset import ImageDataset
from bofexits.errors import DataError

__all__ = ["CIFAR10_FILES", "CIFAR100_FILES", "load_cifar10", "load_cifar100"]

logger = logging.getLogger(__name__)

CIFAR10_FILES = DatasetFiles(
    name="cifar10",
    title="CIFAR-10",
    files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)
CIFAR100_FILES = DatasetFiles(
    name="cifar100",
    title="CIFAR-100",
    files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)

_IMAGE_BYTES = 3 * 32 * 32
# The only callables a CIFAR batch needs: numpy's array rebuild (``numpy.core`` in files pickled by
# numpy 1, ``numpy._core`` by numpy 2) and the codec Python 3 uses for bytes at pickle protocol 2.
_RECONSTRUCT: Callable[..., object] = np.zeros(0).__reduce__()[0]  # type: ignore[assignment,index]
_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its images, labels and class names."""

    spec: DatasetFiles
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Mean and std: per-channel statistics of all training pixels / 255, the values the literature uses.
_CIFAR10 = _Layout(
    spec=CIFAR10_FILES,
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
_CIFAR100 = _Layout(
    spec=CIFAR100_FILES,
    train=("train",),
    test=("test",),
    meta="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)


class _BatchUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain values only; any other global in the file is refused."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it asks for {module}.{name}, which a CIFAR batch never does"
            ) from None


def _unpickle(data: bytes, where: str) -> dict[bytes, object]:
    """Decode one batch or meta file into its dict (keys are bytes, as the files were pickled by Python 2)."""
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # unpickling damaged data raises nearly any type; report them all alike
        raise DataError(
            f"{where} is not a CIFAR pickle ({type(exc).__name__}: {exc}); the file is corrupt or from another "
            "source: delete it and download the dataset again"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(
            f"{where} holds a {type(obj).__name__}, not the dict of a CIFAR batch; delete it and download "
            "the dataset again"
        )
    return obj


def _expect(batch: dict[bytes, object], key: bytes, where: str) -> object:
    if key not in batch:
        keys = ", ".join(repr(k) for k in batch)
        raise DataError(
            f"{where} has no {key!r} entry (it has {keys}); it is not a CIFAR file of this variant: delete it "
            "and download the dataset again"
        )
    return batch[key]


def _read_batch(data: bytes, layout: _Layout, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` int64 labels, checked."""
    batch = _unpickle(data, where)
    images = _expect(batch, b"data", where)
    raw_labels = _expect(batch, layout.label_key, where)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2) or (
        images.shape[1] != _IMAGE_BYTES
    ):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(
            f"{where}: data is {got}, expected uint8 (N, {_IMAGE_BYTES}); delete it and download the dataset "
            "again"
        )
    if not isinstance(raw_labels, list | np.ndarray):
        raise DataError(f"{where}: labels are a {type(raw_labels).__name__}, expected a list; re-download it")
    labels = np.asarray(raw_labels)
    if (
        labels.ndim != 1
        or labels.shape[0] != images.shape[0]
        or (labels.size and labels.dtype.kind not in "iu")
    ):
        raise DataError(
            f"{where}: {images.shape[0]} images but labels of shape {labels.shape} ({labels.dtype}); the file "
            "is damaged: delete it and download the dataset again"
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= layout.num_classes):
        raise DataError(
            f"{where}: labels span [{int(labels.min())}, {int(labels.max())}] but {layout.spec.title} has "
            f"{layout.num_classes} classes; the file belongs to another dataset: delete it and download again"
        )
    return images.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_classes(data: bytes, layout: _Layout, where: str) -> tuple[str, ...]:
    names = _expect(_unpickle(data, where), layout.names_key, where)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        size = len(names) if isinstance(names, list) else type(names).__name__
        raise DataError(
            f"{where}: {layout.names_key!r} has {size} entries, expected {layout.num_classes} class names; "
            "delete it and download the dataset again"
        )
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: class names are not text ({exc}); re-download the dataset") from exc


def _load(layout: _Layout, root: str | Path | None, download: bool) -> tuple[ImageDataset, ImageDataset]:
    remote = layout.spec.files[0]
    assert remote.folder is not None
    path = locate(layout.spec, root, download=download)[remote.name]
    members = read_members(path, remote.folder, (*layout.train, *layout.test, layout.meta))

    def where(member: str) -> str:
        return str(path / member) if path.is_dir() else f"{path}:{remote.folder}/{member}"

    classes = _read_classes(members.pop(layout.meta), layout, where(layout.meta))
    splits = []
    for part, files in (("train", layout.train), ("test", layout.test)):
        batches = [
            _read_batch(members.pop(f), layout, where(f)) for f in files
        ]  # pop: free each file's bytes
        images = np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0]
        labels = np.concatenate([b[1] for b in batches])
        splits.append(
            ImageDataset(
                images=torch.from_numpy(np.ascontiguousarray(images)),  # (N, 3, 32, 32)
                labels=torch.from_numpy(labels),
                classes=classes,
                mean=layout.mean,
                std=layout.std,
                name=f"{layout.spec.name}/{part}",
            )
        )
    train, test = splits
    logger.info("loaded %s from %s: %d train, %d test images", layout.spec.title, path, len(train), len(test))
    return train, test


def load_cifar10(
    root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """Load CIFAR-10 as ``(train, test)``: 50,000 and 10,000 32x32 colour images, 10 classes.

    Args:
        root: directory holding ``cifar-10-python.tar.gz`` or the ``cifar-10-batches-py/`` folder
            (directly or under ``cifar10/``), e.g. from ``--data-dir``; searched before
            ``$BOFEXITS_DATA/cifar10``, ``~/.cache/bofexits/cifar10`` and ``/usr/share/datasets/cifar10``.
        download: fetch and unpack the archive into the cache when no local copy exists.

    Returns:
        ``(train, test)`` with images ``(N, 3, 32, 32)`` uint8, class names from ``batches.meta``,
        mean ``(0.4914, 0.4822, 0.4465)`` and std ``(0.2470, 0.2435, 0.2616)``.

    Raises:
        DataError: the files cannot be found or fetched, or a file is corrupt or not a CIFAR batch.
    """
    return _load(_CIFAR10, root, download)


def load_cifar100(
    root: str | Path | None = None, *, download: bool = True
) -> tuple[ImageDataset, ImageDataset]:
    """Load CIFAR-100 as ``(train, test)`` with its 100 fine labels; same search order as CIFAR-10.

    Args:
        root: directory holding ``cifar-100-python.tar.gz`` or the ``cifar-100-python/`` folder
            (directly or under ``cifar100/``); searched first.
        download: fetch and unpack the archive into ``~/.cache/bofexits/cifar100`` when no local copy exists.

    Returns:
        ``(train, test)``: 50,000 and 10,000 images ``(N, 3, 32, 32)`` uint8, labels the fine labels,
        class names the ``fine_label_names`` of ``meta``, mean ``(0.5071, 0.4865, 0.4409)``,
        std ``(0.2673, 0.2564, 0.2762)``.

    Raises:
        DataError: the files cannot be found or fetched, or a file is corrupt or not a CIFAR batch.
    """
    return _load(_CIFAR100, root, download)
