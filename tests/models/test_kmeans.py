"""k-means used to initialise BoF codebooks."""

from __future__ import annotations

import pytest
import torch

from bofexits.errors import InputError
from bofexits.models.kmeans import kmeans


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, -8.0]])
    labels = torch.arange(200) % 5
    return centres[labels] + 0.3 * torch.randn(200, 2, generator=g), centres


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_separated_clusters(seed: int) -> None:
    points, centres = _blobs(seed)
    c = kmeans(points, 5, generator=torch.Generator().manual_seed(seed))
    assert c.shape == (5, 2)
    d = torch.cdist(centres, c)
    assert sorted(d.argmin(1).tolist()) == [0, 1, 2, 3, 4]
    assert float(d.min(1).values.max()) < 0.2


def test_result_is_a_lloyd_fixed_point() -> None:
    points = torch.randn(60, 3, generator=torch.Generator().manual_seed(3))
    c = kmeans(points, 4, iterations=200, generator=torch.Generator().manual_seed(0))
    assign = torch.cdist(points, c).argmin(1)
    for j in range(4):
        members = points[assign == j]
        assert members.shape[0] > 0
        torch.testing.assert_close(c[j], members.mean(0), atol=1e-5, rtol=1e-5)


def test_reproducible_with_seeded_generator() -> None:
    points = torch.randn(80, 4, generator=torch.Generator().manual_seed(4))
    a = kmeans(points, 6, generator=torch.Generator().manual_seed(11))
    b = kmeans(points, 6, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)


def test_k_equal_n_returns_the_points() -> None:
    points = torch.tensor([[0.0, 0.0], [1.0, 5.0], [-3.0, 2.0]])
    c = kmeans(points, 3, generator=torch.Generator().manual_seed(0))
    assert sorted(map(tuple, c.tolist())) == sorted(map(tuple, points.tolist()))


def test_identical_points_give_finite_centroids() -> None:
    points = torch.full((10, 3), 2.5)
    c = kmeans(points, 4, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(c).all())
    torch.testing.assert_close(c, torch.full((4, 3), 2.5))


def test_duplicates_force_empty_clusters_without_nan() -> None:
    # Two distinct locations, three centroids: seeding must duplicate one, leaving an empty cluster.
    points = torch.cat([torch.zeros(10, 2), torch.ones(1, 2)])
    for seed in range(5):
        c = kmeans(points, 3, generator=torch.Generator().manual_seed(seed))
        assert bool(torch.isfinite(c).all())
        d = torch.cdist(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), c)
        assert float(d.min(1).values.max()) < 1e-6  # both locations have a centroid


def test_integer_points_are_accepted() -> None:
    points = torch.tensor([[0, 0], [0, 1], [10, 10], [10, 11]])
    c = kmeans(points, 2, generator=torch.Generator().manual_seed(0))
    assert sorted(c[:, 0].tolist()) == [0.0, 10.0]


def test_rejects_too_few_points() -> None:
    with pytest.raises(InputError, match="at least k=5"):
        kmeans(torch.randn(4, 2), 5)


@pytest.mark.parametrize("shape", [(10,), (2, 5, 3)])
def test_rejects_non_matrix(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"\(N, C\)"):
        kmeans(torch.randn(*shape), 2)
