"""BoF pooling against a naive reference that builds the explicit (B, N, K, C) difference tensor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bofexits.errors import ConfigError
from bofexits.models.bof import (
    BoFPooling,
    bof_histogram,
    logistic_membership,
    rbf_membership,
    squared_distances,
)

# ---------------------------------------------------------------- naive reference


def _vectors(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C) feature vectors, N = H*W in row-major order."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _to_map(values: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, K) -> (B, K, H, W)."""
    b, _, k = values.shape
    return values.permute(0, 2, 1).reshape(b, k, h, w)


def naive_squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    diff = _vectors(x)[:, :, None, :] - codebook[None, None, :, :]  # (B, N, K, C)
    return _to_map(diff.square().sum(-1), x.shape[2], x.shape[3])


def naive_rbf(x: torch.Tensor, codebook: torch.Tensor, sigma: torch.Tensor, squared: bool) -> torch.Tensor:
    diff = _vectors(x)[:, :, None, :] - codebook[None, None, :, :]  # (B, N, K, C)
    d = diff.square().sum(-1)
    if not squared:
        d = d.sqrt()
    e = torch.exp(-d / sigma - (-d / sigma).amax(-1, keepdim=True))
    return _to_map(e / e.sum(-1, keepdim=True), x.shape[2], x.shape[3])


def naive_logistic(
    x: torch.Tensor, codebook: torch.Tensor, a: float, c: float, eps: float = 1e-6
) -> torch.Tensor:
    prod = _vectors(x)[:, :, None, :] * codebook[None, None, :, :]  # (B, N, K, C)
    u = (torch.tanh(a * prod.sum(-1) + c) + 1.0) / 2.0
    return _to_map(u / (u.sum(-1, keepdim=True) + eps), x.shape[2], x.shape[3])


def _bounds(size: int, i: int) -> tuple[int, int]:
    """Rows/columns of half i (0 or 1) of a side of length `size`; halves overlap on odd sizes."""
    return (i * size) // 2, math.ceil((i + 1) * size / 2)


def naive_histogram(m: torch.Tensor, level: int) -> torch.Tensor:
    b, k, h, w = m.shape
    if level == 0:
        return m.reshape(b, k, h * w).mean(-1)
    blocks = []
    for i in range(2):
        r0, r1 = _bounds(h, i)
        for j in range(2):
            c0, c1 = _bounds(w, j)
            blocks.append(m[:, :, r0:r1, c0:c1].reshape(b, k, -1).mean(-1))
    return torch.cat(blocks, 1)  # region-major, regions in row-major order


SHAPES = [(2, 3, 4, 4), (1, 1, 1, 1), (2, 1, 3, 5), (3, 5, 1, 1), (2, 4, 5, 3), (1, 2, 2, 7)]


def _data(shape: tuple[int, ...], k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    v = torch.randn(k, shape[1], generator=g, dtype=torch.float64)
    return x, v


# ---------------------------------------------------------------- functional ops


@pytest.mark.parametrize("shape", SHAPES)
def test_squared_distances_match_naive(shape: tuple[int, int, int, int]) -> None:
    x, v = _data(shape, 6)
    got = squared_distances(x, v)
    assert got.shape == (shape[0], 6, shape[2], shape[3])
    torch.testing.assert_close(got, naive_squared_distances(x, v), atol=1e-5, rtol=1e-5)


def test_squared_distances_zero_and_nonnegative_at_codewords() -> None:
    # Features equal to codewords with large norms: the expanded identity cancels badly in float32.
    v = torch.tensor([[1000.0, -2000.0, 3000.0], [1000.5, -2000.0, 3000.0]])
    x = v.T.reshape(1, 3, 1, 2)  # the two codewords as two positions
    d = squared_distances(x, v)
    assert bool((d >= 0).all())
    assert d[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1.0)
    assert d[0, 1, 0, 1].item() == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_rbf_membership_matches_naive(shape: tuple[int, int, int, int], squared: bool) -> None:
    x, v = _data(shape, 5, seed=1)
    sigma = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=torch.float64)
    got = rbf_membership(x, v, sigma, squared=squared)
    torch.testing.assert_close(got, naive_rbf(x, v, sigma, squared), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.sum(1), torch.ones(shape[0], shape[2], shape[3], dtype=torch.float64))


def test_rbf_squared_flag_changes_result() -> None:
    x, v = _data((2, 3, 4, 4), 4, seed=2)
    sigma = torch.ones(4, dtype=torch.float64)
    squared = rbf_membership(x, v, sigma, squared=True)
    assert not torch.allclose(squared, rbf_membership(x, v, sigma, squared=False))


@pytest.mark.parametrize("shape", SHAPES)
def test_logistic_membership_matches_naive(shape: tuple[int, int, int, int]) -> None:
    x, v = _data(shape, 5, seed=3)
    a, c = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64)
    got = logistic_membership(x, v, a, c)
    torch.testing.assert_close(got, naive_logistic(x, v, 0.7, -0.3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        got.sum(1), torch.ones(shape[0], shape[2], shape[3], dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_logistic_membership_finite_when_all_similarities_saturate() -> None:
    x, v = _data((1, 2, 2, 2), 3)
    u = logistic_membership(x, v, torch.tensor(0.0), torch.tensor(-100.0))
    assert bool(torch.isfinite(u).all())


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("hw", [(4, 4), (2, 2), (1, 1), (3, 5), (5, 3), (2, 7), (6, 2)])
def test_histogram_matches_naive(level: int, hw: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(4)
    m = torch.softmax(torch.randn(2, 3, *hw, generator=g, dtype=torch.float64), 1)
    got = bof_histogram(m, level)
    assert got.shape == (2, 3 * (4 if level else 1))
    torch.testing.assert_close(got, naive_histogram(m, level), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hw", [(1, 5), (3, 1), (1, 3)])
def test_histogram_level1_uses_every_position_of_thin_maps(hw: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(5)
    m = torch.softmax(torch.randn(1, 3, *hw, generator=g, dtype=torch.float64), 1)
    torch.testing.assert_close(bof_histogram(m, 1), naive_histogram(m, 1), atol=1e-5, rtol=1e-5)


def test_histogram_level1_region_order_is_region_major() -> None:
    # K=2; the top-left quadrant is all codeword 0, the rest all codeword 1.
    m = torch.zeros(1, 2, 4, 4)
    m[0, 1] = 1.0
    m[0, 0, :2, :2] = 1.0
    m[0, 1, :2, :2] = 0.0
    assert bof_histogram(m, 1).tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]]


@pytest.mark.parametrize("level", [-1, 2, 3])
def test_histogram_rejects_bad_level(level: int) -> None:
    with pytest.raises(ConfigError, match="spatial_level"):
        bof_histogram(torch.ones(1, 2, 2, 2), level)


# ---------------------------------------------------------------- the layer


@pytest.mark.parametrize("membership", ["rbf", "logistic"])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("level", [0, 1])
def test_layer_matches_naive(membership: str, squared: bool, level: int) -> None:
    torch.manual_seed(0)
    layer = BoFPooling(
        3,
        5,
        membership=membership,
        squared=squared,
        spatial_level=level,  # type: ignore[arg-type]
        reduce_channels=2,
        pool=2,
    ).double()
    with torch.no_grad():
        layer.log_sigma.copy_(torch.linspace(-1, 1, 5, dtype=torch.float64))
        layer.a.fill_(1.3)
        layer.c.fill_(0.2)
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    prepared = layer.reduce(F.avg_pool2d(x, 2))  # (2, 2, 3, 2)
    if membership == "rbf":
        m = naive_rbf(prepared, layer.codebook, layer.log_sigma.exp(), squared)
    else:
        m = naive_logistic(prepared, layer.codebook, 1.3, 0.2)
    want = naive_histogram(m, level)
    got = layer(x)
    assert got.shape == (2, layer.out_features)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("membership", ["rbf", "logistic"])
@pytest.mark.parametrize("level", [0, 1])
def test_histograms_sum_to_one_per_block(membership: str, level: int) -> None:
    torch.manual_seed(1)
    layer = BoFPooling(4, 6, membership=membership, spatial_level=level)  # type: ignore[arg-type]
    h = layer(torch.randn(3, 4, 5, 5))
    blocks = h.view(3, 4 if level else 1, 6)
    torch.testing.assert_close(blocks.sum(-1), torch.ones(3, blocks.shape[1]), atol=1e-5, rtol=0)
    assert bool((h >= 0).all())


@pytest.mark.parametrize("level, expected", [(0, 7), (1, 28)])
def test_out_features(level: int, expected: int) -> None:
    layer = BoFPooling(3, 7, spatial_level=level)
    assert layer.out_features == expected
    assert layer(torch.randn(2, 3, 4, 4)).shape == (2, expected)


def _grad_loss(out: torch.Tensor) -> torch.Tensor:
    # A plain sum is constant (histograms sum to 1), so weight the bins.
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    return (out * w).sum()


def _has_grad(p: torch.Tensor | None) -> bool:
    if p is None or p.grad is None:
        return False
    return bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0


@pytest.mark.parametrize("level", [0, 1])
def test_gradients_rbf(level: int) -> None:
    torch.manual_seed(2)
    layer = BoFPooling(3, 4, membership="rbf", reduce_channels=2, spatial_level=level)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    _grad_loss(layer(x)).backward()
    assert layer.reduce is not None
    for p in (layer.codebook, layer.log_sigma, layer.reduce.weight, layer.reduce.bias, x):
        assert _has_grad(p)
    assert layer.a.grad is None and layer.c.grad is None  # unused by the RBF quantiser


@pytest.mark.parametrize("level", [0, 1])
def test_gradients_logistic(level: int) -> None:
    torch.manual_seed(3)
    layer = BoFPooling(3, 4, membership="logistic", reduce_channels=2, spatial_level=level)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    _grad_loss(layer(x)).backward()
    assert layer.reduce is not None
    for p in (layer.codebook, layer.a, layer.c, layer.reduce.weight, x):
        assert _has_grad(p)
    assert layer.log_sigma.grad is None


@pytest.mark.parametrize("membership", ["rbf", "logistic"])
@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize(
    "shape, pool",
    [
        ((2, 1, 4, 4), 1),  # C = 1
        ((2, 3, 1, 1), 1),  # H = W = 1
        ((2, 3, 3, 5), 1),
        ((2, 3, 3, 5), 2),  # pooled to 1x2
        ((2, 3, 3, 3), 4),  # pool larger than the map: skipped
        ((1, 2, 1, 1), 3),
    ],
)
def test_odd_shapes(membership: str, level: int, shape: tuple[int, int, int, int], pool: int) -> None:
    torch.manual_seed(4)
    layer = BoFPooling(shape[1], 3, membership=membership, spatial_level=level, pool=pool)  # type: ignore[arg-type]
    h = layer(torch.randn(*shape))
    assert h.shape == (shape[0], layer.out_features)
    assert bool(torch.isfinite(h).all())
    torch.testing.assert_close(
        h.view(shape[0], -1, 3).sum(-1), torch.ones(shape[0], 4 if level else 1), atol=1e-5, rtol=0
    )


def test_pool_larger_than_map_is_skipped() -> None:
    torch.manual_seed(5)
    pooled = BoFPooling(3, 4, pool=4)
    plain = BoFPooling(3, 4, pool=1)
    plain.load_state_dict(pooled.state_dict())
    x = torch.randn(2, 3, 3, 3)
    torch.testing.assert_close(pooled(x), plain(x))


def test_pool_averages_before_quantising() -> None:
    torch.manual_seed(6)
    pooled = BoFPooling(3, 4, pool=2)
    plain = BoFPooling(3, 4)
    plain.load_state_dict(pooled.state_dict())
    x = torch.randn(2, 3, 4, 6)
    torch.testing.assert_close(pooled(x), plain(F.avg_pool2d(x, 2)))
    assert pooled.prepare(x).shape == (2, 3, 2, 3)


CENTRES = torch.tensor([[5.0, 0.0, 0.0], [-5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, -5.0]])


def _clustered_maps(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(64) % 4
    vectors = CENTRES[labels] + 0.1 * torch.randn(64, 3, generator=g)
    vectors = vectors[torch.randperm(64, generator=g)]
    return vectors.reshape(4, 4, 4, 3).permute(0, 3, 1, 2).contiguous()  # (4, 3, 4, 4)


@pytest.mark.parametrize("membership", ["rbf", "logistic"])
def test_init_from_features_puts_codewords_on_clusters(membership: str) -> None:
    layer = BoFPooling(3, 4, membership=membership)  # type: ignore[arg-type]
    layer.init_from_features(_clustered_maps(), generator=torch.Generator().manual_seed(0))
    d = torch.cdist(CENTRES, layer.codebook.detach())  # (4 centres, 4 codewords)
    assert float(d.min(1).values.max()) < 0.2  # every centre has a codeword on it
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2, 3]  # one codeword per centre
    assert bool(torch.isfinite(layer.log_sigma).all())


def test_init_from_features_rbf_width_and_assignment() -> None:
    layer = BoFPooling(3, 4, squared=True)
    maps = _clustered_maps(1)
    layer.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    vectors = _vectors(maps).reshape(-1, 3)
    nearest = torch.cdist(vectors, layer.codebook.detach()).square().min(1).values
    assert float(layer.log_sigma.detach().exp()[0]) == pytest.approx(float(nearest.mean()), rel=1e-4)
    assert bool((layer.log_sigma == layer.log_sigma[0]).all())
    # Memberships put each vector on its own cluster's codeword.
    m = layer.memberships(maps)
    owner = torch.cdist(vectors, layer.codebook.detach()).argmin(1)
    assert torch.equal(_vectors(m).reshape(-1, 4).argmax(1), owner)


def test_init_from_features_logistic_standardises_similarities() -> None:
    layer = BoFPooling(3, 4, membership="logistic")
    maps = _clustered_maps(2)
    layer.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    s = _vectors(maps).reshape(-1, 3) @ layer.codebook.detach().T
    z = layer.a.detach() * s + layer.c.detach()
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)


def test_init_from_features_subsamples_reproducibly() -> None:
    maps = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a, b, c = BoFPooling(3, 4), BoFPooling(3, 4), BoFPooling(3, 4)
    a.init_from_features(maps, max_vectors=20, generator=torch.Generator().manual_seed(7))
    b.init_from_features(maps, max_vectors=20, generator=torch.Generator().manual_seed(7))
    c.init_from_features(maps, max_vectors=20, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.codebook, b.codebook)
    assert not torch.allclose(a.codebook, c.codebook)


def test_init_from_features_float64() -> None:
    layer = BoFPooling(3, 4).double()
    maps = _clustered_maps().double()
    layer.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    assert float(torch.cdist(CENTRES.double(), layer.codebook.detach()).min(1).values.max()) < 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"membership": "cosine"},
        {"codewords": 1},
        {"codewords": 0},
        {"in_channels": 0},
        {"pool": 0},
        {"spatial_level": 2},
        {"spatial_level": -1},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"in_channels": 3, "codewords": 4}
    args.update(kwargs)
    with pytest.raises(ConfigError):
        BoFPooling(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("codewords", [3.5, "32", True])
def test_non_integer_codewords_are_refused(codewords: object) -> None:
    with pytest.raises(ConfigError, match="codewords must be an integer"):
        BoFPooling(8, codewords)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(2, 8, 5, 5, dtype=torch.float64), "float32 feature map"),
        (torch.randn(2, 3, 5, 5), r"\(B, 8, H, W\)"),
        (torch.randn(8, 5, 5), r"\(B, 8, H, W\)"),
    ],
)
def test_bad_feature_maps_get_a_clear_error(x: torch.Tensor, match: str) -> None:
    from bofexits.errors import InputError

    with pytest.raises(InputError, match=match):
        BoFPooling(8, 4)(x)
