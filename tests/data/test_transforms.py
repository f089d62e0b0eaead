"""Batch transforms: shapes, seeded determinism, and agreement with naive per-sample references."""

from __future__ import annotations

import doctest
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from bofexits.data import transforms
from bofexits.data.transforms import compose, normalize, random_crop, random_horizontal_flip
from bofexits.errors import InputError


def batch(b: int = 16, c: int = 3, h: int = 7, w: int = 9) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_doctests() -> None:
    result = doctest.testmod(transforms, extraglobs={"torch": torch})
    assert result.attempted >= 4 and result.failed == 0


def test_normalize() -> None:
    x = torch.rand(4, 2, 3, 3)
    out = normalize(x, (0.5, 0.25), (2.0, 0.5))
    torch.testing.assert_close(out[:, 0], (x[:, 0] - 0.5) / 2.0)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.25) / 0.5)
    assert out.dtype == torch.float32 and out is not x
    with pytest.raises(InputError, match="channels"):
        normalize(x, (0.5,), (1.0,))
    with pytest.raises(InputError, match="positive"):
        normalize(x, (0.5, 0.5), (1.0, 0.0))
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        normalize(x[0], (0.5, 0.5), (1.0, 1.0))
    with pytest.raises(InputError, match="float"):
        normalize(x.to(torch.uint8), (0.5, 0.5), (1.0, 1.0))


def test_flip_is_per_sample_and_correct() -> None:
    x = batch()
    out = random_horizontal_flip(x, generator=gen(1))
    assert out.shape == x.shape
    flipped = [bool(torch.equal(out[i], x[i].flip(-1))) for i in range(len(x))]
    kept = [bool(torch.equal(out[i], x[i])) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)
    torch.testing.assert_close(random_horizontal_flip(x, p=1.0), x.flip(-1))
    torch.testing.assert_close(random_horizontal_flip(x, p=0.0), x)


def test_flip_deterministic_with_seed() -> None:
    x = batch()
    assert torch.equal(
        random_horizontal_flip(x, generator=gen(3)), random_horizontal_flip(x, generator=gen(3))
    )
    with pytest.raises(InputError, match="p"):
        random_horizontal_flip(x, p=1.5)


def naive_crop(x: torch.Tensor, padding: int, generator: torch.Generator, fill: float) -> torch.Tensor:
    """Per-sample reference: same random draws, explicit pad and slice."""
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    out = torch.empty_like(x)
    for i in range(b):
        padded = F.pad(x[i], (padding,) * 4, value=fill)
        oy, ox = int(offsets[0, i]), int(offsets[1, i])
        out[i] = padded[:, oy : oy + h, ox : ox + w]
    return out


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_matches_naive_reference(padding: int) -> None:
    x = batch()
    out = random_crop(x, padding, generator=gen(5), fill=-1.5)
    assert out.shape == x.shape and out.is_contiguous()
    torch.testing.assert_close(out, naive_crop(x, padding, gen(5), -1.5), rtol=0, atol=0)


def test_crop_content_is_a_shifted_window() -> None:
    x = batch(b=64, c=1, h=5, w=5)
    out = random_crop(x, 2, generator=gen(0), fill=-1.0)
    for i in range(len(x)):
        values = out[i][out[i] != -1.0]
        assert set(values.tolist()) <= set(x[i].flatten().tolist())
    assert not torch.equal(out, x)  # some sample was shifted
    assert torch.equal(random_crop(x, 0), x)


def test_crop_deterministic_and_validates() -> None:
    x = batch()
    assert torch.equal(random_crop(x, 3, generator=gen(9)), random_crop(x, 3, generator=gen(9)))
    assert not torch.equal(random_crop(x, 3, generator=gen(9)), random_crop(x, 3, generator=gen(10)))
    with pytest.raises(InputError, match="padding"):
        random_crop(x, -1)
    with pytest.raises(InputError, match="padding"):
        random_crop(x, 1.5)  # type: ignore[arg-type]


def test_compose_order_and_shared_generator() -> None:
    x = batch()
    aug = compose(partial(random_crop, padding=2), random_horizontal_flip)
    g1, g2 = gen(7), gen(7)
    expected = random_horizontal_flip(random_crop(x, 2, generator=g2), generator=g2)
    assert torch.equal(aug(x, g1), expected)
    assert torch.equal(compose()(x, None), x)
    with pytest.raises(InputError, match="callable"):
        compose(3)  # type: ignore[arg-type]
