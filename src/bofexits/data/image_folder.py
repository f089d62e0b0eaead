"""Your own images as a dataset: one sub-folder per class, PNG or JPEG files read with Pillow.

Two layouts are accepted (class names are the sub-folder names, sorted; label ``i`` is the
``i``-th name):

- ``root/train/<class>/...`` and ``root/test/<class>/...``: the split is yours (both must hold the
  same class folders; other folders beside ``train/`` and ``test/`` are ignored);
- ``root/<class>/...``: each class is split into train and test by :func:`split_files`, a
  deterministic stratified split (default: 20 % test, seed 0) that depends only on the file names.

Images may sit anywhere below their class folder; hidden files and folders (``.name``) and files
that are not ``.png``, ``.jpg`` or ``.jpeg`` are skipped. Every image goes through
:func:`image_to_tensor`, the same function a single image is preprocessed with at prediction time,
so the network sees identical pixels in training and use.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bofexits._pixels import PixelError, decode_pixels
from bofexits.data.dataset import ImageDataset
from bofexits.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageMode",
    "image_to_tensor",
    "load_image_folder",
    "read_image",
    "split_files",
]

logger = logging.getLogger(__name__)

#: File name endings read as images (compared in lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: ``"L"``: one grey channel; ``"RGB"``: three colour channels.
ImageMode = Literal["L", "RGB"]

_MODES = ("L", "RGB")
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_EXIF_ORIENTATION = 0x0112
_ROTATED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_CHUNK = 4096
# Pillow's decoders report damaged files with all of these, not only OSError.
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ConfigError(f"image size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _check_mode(mode: object) -> ImageMode:
    if mode not in _MODES:
        raise ConfigError(f"image mode must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def image_to_tensor(image: Image.Image, size: int | tuple[int, int], mode: ImageMode) -> torch.Tensor:
    """Turn one PIL image into the ``(C, H, W)`` uint8 tensor a model trained on an image folder expects.

    The pixels are `bofexits._pixels.decode_pixels`'s, the decoder `predict` uses too: EXIF
    orientation applied, alpha composited over black, 16-bit and float greys scaled to 8 bits,
    converted to ``mode``, then resized to exactly ``size`` (bilinear, antialiased when shrinking;
    the aspect ratio is not kept, so no part of the image is cut off).

    Args:
        image: any image Pillow opened.
        size: ``(height, width)`` of the result, or one int for a square.
        mode: ``"L"`` (1 channel) or ``"RGB"`` (3 channels); a model's input channels tell which.

    Returns:
        ``(C, H, W)`` uint8 tensor, ``C`` 1 for ``"L"`` and 3 for ``"RGB"``.

    >>> image_to_tensor(Image.new("RGB", (40, 30), (255, 0, 0)), (8, 16), "L").shape
    torch.Size([1, 8, 16])
    """
    height, width = _check_size(size)
    array = decode_pixels(image, (height, width), _check_mode(mode))  # (H, W, C)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path, size: int | tuple[int, int], mode: ImageMode) -> torch.Tensor:
    """Read one image file into a ``(C, H, W)`` uint8 tensor by :func:`image_to_tensor`'s rules.

    Raises:
        DataError: the file is missing, not an image, or damaged; the message names it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image_to_tensor(image, size, mode)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist; check the path") from None
    except PixelError as exc:
        raise DataError(f"image {path} {exc}; replace or delete it") from None
    except _PIL_ERRORS as exc:
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); the file is damaged or not a PNG/JPEG: "
            "replace or delete it"
        ) from exc


def _probe(path: Path) -> tuple[tuple[int, int], bool]:
    """``((height, width) as displayed, has colour)`` from the file's header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION) in _ROTATED:
                width, height = height, width
            if image.mode == "P":
                palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
                colour = bool((palette != palette[:, :1]).any())
            else:
                colour = image.mode not in _GREY_MODES
    except _PIL_ERRORS as exc:
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); the file is damaged or not a PNG/JPEG: "
            "replace or delete it"
        ) from exc
    return (height, width), colour


def split_files(files: Sequence[str], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split one class's files into train and test indices, deterministically and stably.

    Each file is ranked by ``sha256(f"{seed}/{name}")`` and the ``min(round(test_fraction * n), n - 1)``
    lowest go to test (a class always keeps a training image). The result depends only on the names,
    the fraction and the seed, not on the file system's order or the machine, and adding an image
    moves at most one other image between the parts, so a test set stays held out as a folder grows.

    Args:
        files: names identifying the files, e.g. paths relative to the class folder.
        test_fraction: share of files for test, strictly between 0 and 1.
        seed: changes which files are drawn.

    Returns:
        ``(train, test)`` indices into ``files``, each ascending.

    >>> split_files([f"{i}.png" for i in range(10)], 0.3, seed=0)[1]
    [1, 2, 6]
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    n = len(files)
    ranked = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}/{files[i]}".encode()).hexdigest())
    n_test = min(round(test_fraction * n), max(n - 1, 0))
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def _class_folders(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )


def _image_files(folder: Path) -> list[Path]:
    """Images below ``folder``, sorted by relative path; hidden entries and other files skipped."""
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _scan(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, checking there are at least two classes and none is empty."""
    classes = _class_folders(folder)
    if not classes:
        loose = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS][:3]
        hint = f" (found images {', '.join(loose)} directly in it)" if loose else ""
        raise DataError(
            f"{folder} has no class folders{hint}; put each class's images in its own sub-folder: "
            f"{folder}/<class>/<image>.png, or use {folder}/train/<class>/... and {folder}/test/<class>/..."
        )
    if len(classes) < 2:
        raise DataError(
            f"{folder} has only the class folder {classes[0].name}/; classification needs at least 2 classes: "
            "add a sub-folder of images for each other class"
        )
    found = {c.name: _image_files(c) for c in classes}
    for c in classes:
        if not found[c.name]:
            raise DataError(
                f"class folder {c} holds no {'/'.join(IMAGE_EXTENSIONS)} images; add images or remove the folder"
            )
    return found


def _read_all(paths: Sequence[Path], size: tuple[int, int], mode: ImageMode, what: str) -> torch.Tensor:
    channels = 1 if mode == "L" else 3
    images = torch.empty((len(paths), channels, *size), dtype=torch.uint8)  # (N, C, H, W)
    bar = tqdm(
        paths, desc=f"reading {what}", unit="img", leave=False, disable=True if len(paths) < 1000 else None
    )
    for i, path in enumerate(bar):
        images[i] = read_image(path, size, mode)
    return images


def _statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``images / 255``, in float64 chunks to bound memory."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _CHUNK):
        x = images[start : start + _CHUNK].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    # A channel that never varies (e.g. all-black padding) cannot be scaled; leave it unscaled.
    return tuple(mean.tolist()), tuple(s if s > 1e-6 else 1.0 for s in std.tolist())


def load_image_folder(
    root: str | Path,
    *,
    image_size: int | tuple[int, int] | None = None,
    mode: ImageMode | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """Load a folder of class sub-folders as ``(train, test)`` in-memory datasets.

    Args:
        root: ``root/<class>/...`` (split here) or ``root/train/<class>/...`` + ``root/test/<class>/...``.
        image_size: ``(height, width)`` (or one int for a square) every image is resized to. Default:
            the most common size among all the images (ties: the first in sorted order), so a folder of
            equal-sized images is never resampled.
        mode: ``"L"`` (grey, 1 channel) or ``"RGB"`` (3 channels). Default: ``"RGB"`` if any image has
            colour, else ``"L"``; grey to RGB loses nothing, the reverse would.
        test_fraction: share of each class held out for test in the single-folder layout (see
            :func:`split_files`); ignored when ``train/`` and ``test/`` exist.
        seed: seed of that split.
        name: dataset name in logs and reports (default: the folder's name); splits are ``name/train``
            and ``name/test``.

    Returns:
        ``(train, test)``: images ``(N, C, H, W)`` uint8 in sorted path order per class, labels the
        class indices, mean and std per channel computed from the train split.

    Raises:
        DataError: the folder is missing, has fewer than 2 classes or an empty class folder, the
            train/test class folders differ, the split leaves no test image, or an image is
            unreadable (the message names the file).
        ConfigError: ``image_size``, ``mode`` or ``test_fraction`` is invalid.
    """
    root = Path(root).expanduser()
    size = None if image_size is None else _check_size(image_size)
    mode = None if mode is None else _check_mode(mode)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; check --data-dir")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files, test_files = _given_split(root)
    else:
        train_files, test_files = _split_folder(root, test_fraction, seed)
    classes = tuple(train_files)
    train_paths = [p for cls in classes for p in train_files[cls]]
    test_paths = [p for cls in classes for p in test_files[cls]]
    size, mode = _default_size_and_mode([*train_paths, *test_paths], size, mode)
    name = name or root.resolve().name
    labels = {
        part: torch.tensor([i for i, cls in enumerate(classes) for _ in files[cls]], dtype=torch.int64)
        for part, files in (("train", train_files), ("test", test_files))
    }
    train_images = _read_all(train_paths, size, mode, f"{name}/train")
    test_images = _read_all(test_paths, size, mode, f"{name}/test")
    mean, std = _statistics(train_images)
    train = ImageDataset(train_images, labels["train"], classes, mean, std, f"{name}/train")
    test = ImageDataset(test_images, labels["test"], classes, mean, std, f"{name}/test")
    logger.info(
        "loaded image folder %s: %d classes, %d train, %d test images, %s %dx%d",
        *(root, len(classes), len(train), len(test), mode, size[0], size[1]),
    )
    return train, test


_Files = dict[str, list[Path]]


def _given_split(root: Path) -> tuple[_Files, _Files]:
    """``root/train/<class>`` and ``root/test/<class>``, which must name the same classes."""
    others = [p.name for p in _class_folders(root) if p.name not in ("train", "test")]
    if others:
        logger.warning("%s has train/ and test/; ignoring the folders %s", root, ", ".join(others))
    train_files, test_files = _scan(root / "train"), _scan(root / "test")
    if list(train_files) != list(test_files):
        only_train = sorted(set(train_files) - set(test_files))
        only_test = sorted(set(test_files) - set(train_files))
        raise DataError(
            f"{root}/train and {root}/test must hold the same class folders; only in train: "
            f"{', '.join(only_train) or '-'}; only in test: {', '.join(only_test) or '-'}"
        )
    return train_files, test_files


def _split_folder(root: Path, test_fraction: float, seed: int) -> tuple[_Files, _Files]:
    """``root/<class>`` split per class by `split_files` (stable under added images)."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    train_files: _Files = {}
    test_files: _Files = {}
    for cls, files in _scan(root).items():
        train_idx, test_idx = split_files(
            [p.relative_to(root / cls).as_posix() for p in files], test_fraction, seed
        )
        train_files[cls] = [files[i] for i in train_idx]
        test_files[cls] = [files[i] for i in test_idx]
    if not any(test_files.values()):
        raise DataError(
            f"{root} has too few images for a test split at test_fraction={test_fraction} (each class "
            "keeps at least one training image); add images, raise the fraction, or give train/ and test/"
        )
    return train_files, test_files


def _default_size_and_mode(
    paths: list[Path], size: tuple[int, int] | None, mode: ImageMode | None
) -> tuple[tuple[int, int], ImageMode]:
    """The most common image size and "RGB" if any image has colour, where not given."""
    if size is None or mode is None:
        probes = [_probe(p) for p in paths]
        if size is None:
            size = Counter(s for s, _ in probes).most_common(1)[0][0]
        if mode is None:
            mode = "RGB" if any(colour for _, colour in probes) else "L"
    return size, mode
