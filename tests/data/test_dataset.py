"""ImageDataset validation, deterministic splits, and normalised batches."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from bofexits.data.dataset import ImageDataset
from bofexits.data.transforms import random_horizontal_flip
from bofexits.errors import DataError, InputError


def make(n: int = 20, c: int = 1, classes: int = 3) -> ImageDataset:
    images = (torch.arange(n * c * 4 * 4) % 256).to(torch.uint8).view(n, c, 4, 4)
    labels = torch.arange(n) % classes
    return ImageDataset(
        images=images,
        labels=labels,
        classes=tuple(f"c{i}" for i in range(classes)),
        mean=(0.5,) * c,
        std=(0.25,) * c,
        name="toy",
    )


def test_len_and_subset() -> None:
    ds = make()
    assert len(ds) == 20
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and torch.equal(sub.images[0], ds.images[3]) and sub.labels.tolist() == [0, 1]
    assert sub.classes == ds.classes and sub.name == "toy"
    with pytest.raises(InputError, match="indices"):
        ds.subset([20])


def test_split_deterministic_disjoint_covering() -> None:
    ds = make(n=100)
    ds = ImageDataset(ds.images, torch.arange(100) % 3, ds.classes, ds.mean, ds.std, ds.name)
    tag = ImageDataset(  # images encode their index so parts can be traced back
        torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), ds.labels, ds.classes, ds.mean, ds.std, "t"
    )
    rest, held = tag.split(0.2, seed=1)
    rest2, held2 = tag.split(0.2, seed=1)
    _, held3 = tag.split(0.2, seed=2)
    assert (len(rest), len(held)) == (80, 20)
    r, h = set(rest.images.flatten().tolist()), set(held.images.flatten().tolist())
    assert not r & h and r | h == set(range(100))
    assert torch.equal(held.images, held2.images) and torch.equal(rest.images, rest2.images)
    assert not torch.equal(held.images, held3.images)
    assert held.images.flatten().tolist() == sorted(h)  # original order kept


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_validates_fraction(fraction: float) -> None:
    with pytest.raises(InputError, match="fraction"):
        make().split(fraction, seed=0)


def test_split_refuses_empty_part() -> None:
    with pytest.raises(InputError, match="empty"):
        make(n=3).split(0.1, seed=0)


def test_batches_normalised_in_order() -> None:
    ds = make(n=10)
    out = list(ds.batches(4, shuffle=False))
    assert [len(y) for _, y in out] == [4, 4, 2]
    x, y = out[0]
    assert x.dtype == torch.float32 and x.shape == (4, 1, 4, 4) and y.dtype == torch.int64
    torch.testing.assert_close(x, (ds.images[:4].float() / 255 - 0.5) / 0.25)
    assert torch.cat([y for _, y in out]).tolist() == ds.labels.tolist()
    assert [len(y) for _, y in ds.batches(4, shuffle=False, drop_last=True)] == [4, 4]


def test_batches_shuffle_seeded_and_complete() -> None:
    ds = ImageDataset(
        torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1),
        torch.zeros(50, dtype=torch.long),
        ("a",),
        (0.0,),
        (1.0,),
        "t",
    )

    def order(seed: int) -> list[int]:
        xs = [x for x, _ in ds.batches(8, shuffle=True, generator=torch.Generator().manual_seed(seed))]
        return torch.cat(xs).mul(255).round().long().flatten().tolist()

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == list(range(50)) and order(0) != list(range(50))


def test_batches_apply_transform_after_normalisation() -> None:
    ds = make(n=6, c=2)
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        seen.append(x.clone())
        return random_horizontal_flip(x, p=1.0, generator=generator)

    ((x, _),) = ds.batches(6, shuffle=False, transform=spy)
    torch.testing.assert_close(seen[0], (ds.images.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(x, seen[0].flip(-1))
    flip = partial(random_horizontal_flip, p=1.0)
    ((x2, _),) = ds.batches(6, shuffle=False, transform=flip, generator=torch.Generator())
    torch.testing.assert_close(x2, x)
    with pytest.raises(InputError, match="batch_size"):
        next(ds.batches(0, shuffle=False))


def test_validation() -> None:
    ds = make()
    with pytest.raises(InputError, match="uint8"):
        ImageDataset(ds.images.float(), ds.labels, ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(InputError, match="uint8"):
        ImageDataset(ds.images[0], ds.labels, ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(InputError, match="int64"):
        ImageDataset(ds.images, ds.labels.int(), ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(DataError, match="20 images but 19 labels"):
        ImageDataset(ds.images, ds.labels[:19], ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(DataError, match="3 classes"):
        ImageDataset(ds.images, ds.labels + 1, ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(DataError, match="classes"):
        ImageDataset(ds.images, ds.labels - 1, ds.classes, ds.mean, ds.std, "x")
    with pytest.raises(InputError, match="per channel"):
        ImageDataset(ds.images, ds.labels, ds.classes, (0.5, 0.5), ds.std, "x")
    with pytest.raises(InputError, match="positive"):
        ImageDataset(ds.images, ds.labels, ds.classes, ds.mean, (0.0,), "x")
    with pytest.raises(InputError, match="empty"):
        ImageDataset(ds.images, ds.labels, (), ds.mean, ds.std, "x")
