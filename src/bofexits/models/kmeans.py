"""k-means for codebook initialisation (docs/method.md §2): BoF exits learn only from sampled codewords."""

from __future__ import annotations

import torch

from bofexits.errors import InputError

__all__ = ["kmeans"]


def kmeans(
    points: torch.Tensor, k: int, *, iterations: int = 25, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cluster feature vectors with k-means++ seeding and Lloyd iterations.

    Args:
        points: (N, C) float feature vectors, N >= k.
        k: number of centroids.
        iterations: Lloyd iterations (the codebook is fine-tuned later, so a few suffice).
        generator: seeded generator for reproducible seeding.

    Returns:
        (k, C) centroids. Empty clusters are re-seeded with the worst-fitted points.

    >>> pts = torch.cat([torch.zeros(50, 2), torch.ones(50, 2) * 10])
    >>> c = kmeans(pts, 2, generator=torch.Generator().manual_seed(0))
    >>> sorted(c[:, 0].round().tolist())
    [0.0, 10.0]
    """
    if points.ndim != 2:
        raise InputError(f"kmeans expects (N, C) points, got shape {tuple(points.shape)}")
    n = points.shape[0]
    if n < k:
        raise InputError(f"kmeans needs at least k={k} points, got {n}; sample more feature vectors")
    points = points.float()
    # k-means++ seeding: each new centroid is drawn proportionally to its squared distance.
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = points[first : first + 1].clone()
    closest = torch.cdist(points, centroids).squeeze(1).square()
    for _ in range(1, k):
        probs = closest / closest.sum() if float(closest.sum()) > 0 else torch.full_like(closest, 1.0 / n)
        idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids = torch.cat([centroids, points[idx : idx + 1]])
        closest = torch.minimum(closest, (points - points[idx]).square().sum(1))
    for _ in range(iterations):
        dist = torch.cdist(points, centroids)  # (N, k)
        assign = dist.argmin(1)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        empty = counts == 0
        new = sums / counts.clamp(min=1).unsqueeze(1)
        if bool(empty.any()):
            worst = dist.gather(1, assign.unsqueeze(1)).squeeze(1).topk(int(empty.sum())).indices
            new[empty] = points[worst]
        if torch.allclose(new, centroids):
            centroids = new
            break
        centroids = new
    return centroids
