"""An in-memory image classification dataset: uint8 images, labels, and how to normalise them.

Small vision datasets fit in memory as uint8 (Fashion-MNIST train is 47 MB), so batches are cut
straight from one tensor; this is much faster than a per-sample DataLoader and fully seedable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from bofexits.data.transforms import Transform, normalize
from bofexits.errors import DataError, InputError

__all__ = ["ImageDataset"]


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} of shape {tuple(value.shape)}"
    return type(value).__name__


@dataclass(frozen=True)
class ImageDataset:
    """Images with integer labels, plus the per-channel statistics used to normalise them.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor with values in ``[0, len(classes))``.
        classes: class names; index ``i`` names label ``i``.
        mean: ``C`` per-channel means of ``images / 255``.
        std: ``C`` per-channel standard deviations of ``images / 255``.
        name: short dataset name for logs and reports, e.g. ``fashion-mnist/train``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.dtype != torch.uint8:
            raise InputError(
                f"{self.name}: images must be a uint8 (N, C, H, W) tensor, got {_describe(images)}"
            )
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype != torch.int64:
            raise InputError(f"{self.name}: labels must be an int64 (N,) tensor, got {_describe(labels)}")
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{self.name}: {images.shape[0]} images but {labels.shape[0]} labels; the image and label "
                "files belong to different datasets or one is damaged"
            )
        if not self.classes:
            raise InputError(f"{self.name}: classes is empty; give one name per label")
        channels = images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise InputError(
                f"{self.name}: mean/std have {len(self.mean)}/{len(self.std)} entries for {channels} "
                "channels; give one per channel"
            )
        if any(not s > 0 for s in self.std):
            raise InputError(f"{self.name}: std values must be positive, got {self.std}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"{self.name}: labels span [{int(labels.min())}, {int(labels.max())}] but there are "
                f"{len(self.classes)} classes; the label file is corrupt or belongs to another dataset"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """Return the samples at ``indices`` (in that order) as a new dataset with the same metadata."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        n = len(self)
        if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
            raise InputError(
                f"{self.name}: subset indices must lie in [0, {n}), got [{int(index.min())}, "
                f"{int(index.max())}]"
            )
        return ImageDataset(
            images=self.images[index],
            labels=self.labels[index],
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            name=self.name,
        )

    def split(self, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """Randomly split off a held-out part, e.g. a validation or calibration set.

        The same ``seed`` always gives the same split, so a held-out set stays held out across runs.

        Args:
            fraction: share of samples in the *second* (held-out) part, strictly between 0 and 1.
            seed: seed of the permutation.

        Returns:
            ``(rest, held_out)``: disjoint, covering every sample, each kept in original order;
            ``len(held_out) == round(fraction * len(self))``.
        """
        if not 0.0 < fraction < 1.0:
            raise InputError(f"split fraction must be strictly between 0 and 1, got {fraction}")
        n = len(self)
        n_held = round(fraction * n)
        if not 0 < n_held < n:
            raise InputError(
                f"{self.name}: splitting {n} samples with fraction {fraction} leaves an empty part; "
                "use a fraction nearer 0.5 or a larger dataset"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        held = perm[:n_held].sort().values
        rest = perm[n_held:].sort().values
        return self.subset(rest), self.subset(held)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        transform: Transform | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised float batches, optionally shuffled and augmented.

        Args:
            batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
            shuffle: draw a fresh random order (from ``generator``) on each call.
            generator: randomness for shuffling and ``transform``; ``None`` uses the global RNG.
            transform: applied to the normalised batch as ``transform(x, generator=generator)``.
            drop_last: skip a final incomplete batch, e.g. to keep batch-norm statistics stable.

        Yields:
            ``(x, y)``: ``x`` is ``(B, C, H, W)`` float32 ``(images / 255 - mean) / std``;
            ``y`` is ``(B,)`` int64.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            if order is None:
                images = self.images[start : start + batch_size]
                labels = self.labels[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                images, labels = self.images[index], self.labels[index]
            x = normalize(images.to(torch.float32).div_(255.0), self.mean, self.std)
            if transform is not None:
                x = transform(x, generator=generator)
            yield x, labels
