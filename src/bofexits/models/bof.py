"""Bag-of-Features pooling: soft quantisation of feature vectors + histogram (docs/method.md §2).

Neural BoF (Passalis & Tefas, Pattern Recognition 2017; ICCV 2017). A feature map
(B, C, H, W) is read as H*W feature vectors; each is softly assigned to K learnable
codewords and the memberships are averaged into a K-bin histogram whose size does
not depend on C, H or W. Distances use ||x-v||^2 = ||x||^2 + ||v||^2 - 2 x.v as a
1x1 convolution, so no (N, K, C) tensor is ever built. With one width shared by all
codewords (`shared_width`), ||x||^2 / sigma is the same for every codeword and cancels in
the softmax over them: the inference form is then a 1x1 convolution and a softmax
(`bofexits.models.folded`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bofexits._checks import check_feature_map, require_int
from bofexits.errors import ConfigError
from bofexits.models.kmeans import kmeans
from bofexits.options import MEMBERSHIPS, Membership  # re-exported: the names live in options

__all__ = [
    "BoFPooling",
    "Membership",
    "bof_histogram",
    "logistic_membership",
    "rbf_membership",
    "squared_distances",
]



def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance of every feature vector to every codeword.

    Args:
        x: (B, C, H, W) feature map.
        codebook: (K, C) codewords.

    Returns:
        (B, K, H, W) distances, clamped at 0 (the identity can go slightly negative).

    >>> x = torch.zeros(1, 2, 1, 1); v = torch.tensor([[3.0, 4.0]])
    >>> squared_distances(x, v).flatten().tolist()
    [25.0]
    """
    xx = x.square().sum(1, keepdim=True)  # (B, 1, H, W)
    vv = codebook.square().sum(1).view(1, -1, 1, 1)  # (1, K, 1, 1)
    xv = F.conv2d(x, codebook[:, :, None, None])  # (B, K, H, W)
    return (xx + vv - 2.0 * xv).clamp_min(0.0)


def rbf_membership(
    x: torch.Tensor, codebook: torch.Tensor, sigma: torch.Tensor, *, squared: bool = True
) -> torch.Tensor:
    """Soft assignment u_nk = softmax_k(-d(x_n, v_k) / sigma_k).

    Args:
        x: (B, C, H, W) feature map.
        codebook: (K, C) codewords.
        sigma: (K,) positive widths.
        squared: use the squared distance (cheaper) or its square root.

    Returns:
        (B, K, H, W) memberships; they sum to 1 over K at every position.
    """
    d = squared_distances(x, codebook)
    if not squared:
        d = d.sqrt()
    return torch.softmax(-d / sigma.view(1, -1, 1, 1), dim=1)


def logistic_membership(
    x: torch.Tensor, codebook: torch.Tensor, a: torch.Tensor, c: torch.Tensor, *, eps: float = 1e-6
) -> torch.Tensor:
    """Cheaper similarity: (tanh(a * x.v + c) + 1) / 2, normalised over the codewords.

    Args:
        x: (B, C, H, W) feature map.
        codebook: (K, C) codewords.
        a: scalar slope; c: scalar offset (both learnable).
        eps: keeps the normalisation finite when every similarity saturates at 0.

    Returns:
        (B, K, H, W) memberships that sum to 1 over K.
    """
    s = F.conv2d(x, codebook[:, :, None, None])  # (B, K, H, W)
    u = torch.tanh(a * s + c).add(1.0).mul(0.5)
    return u / (u.sum(1, keepdim=True) + eps)


def bof_histogram(membership: torch.Tensor, spatial_level: int = 0) -> torch.Tensor:
    """Average memberships over positions: level 0 one histogram, level 1 one per 2x2 region.

    Args:
        membership: (B, K, H, W).
        spatial_level: 0 -> (B, K); 1 -> (B, 4K), regions concatenated (any H, W >= 1).

    Returns:
        Histograms; each K-bin block sums to 1.

    >>> bof_histogram(torch.full((1, 4, 3, 3), 0.25)).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    if spatial_level not in (0, 1):
        raise ConfigError(f"spatial_level must be 0 or 1, got {spatial_level!r}")
    side = 1 if spatial_level == 0 else 2
    # adaptive_avg_pool2d also handles H or W < 2 (a 1-px side is shared by both halves).
    hist = F.adaptive_avg_pool2d(membership, side)  # (B, K, side, side)
    return hist.permute(0, 2, 3, 1).flatten(1)  # region-major: [r0 K bins, r1 K bins, ...]


class BoFPooling(nn.Module):
    """Learnable BoF pooling: optional pre-pool and 1x1 channel reduction, quantiser, histogram.

    Args:
        in_channels: C of the incoming feature map.
        codewords: K, the histogram size shared by all exits.
        membership: "rbf" (distance softmax, the method's original) or "logistic" (cheaper).
        squared: RBF on squared distances (default) or on distances.
        spatial_level: 0 or 1 (2x2 pyramid regions).
        reduce_channels: if set, a 1x1 conv maps C to this many channels before quantising.
        pool: average-pool the map by this factor first; large early maps cost more than
            a whole stage otherwise (docs/method.md §7).
        shared_width: one RBF width for all codewords instead of one per codeword. The
            squared-norm term of the input then cancels in the softmax, so the inference form
            drops two operators per exit (docs/decisions.md, "Fused exit heads").
    """

    def __init__(
        self,
        in_channels: int,
        codewords: int = 32,
        *,
        membership: Membership = "rbf",
        squared: bool = True,
        spatial_level: int = 0,
        reduce_channels: int | None = None,
        pool: int = 1,
        shared_width: bool = False,
    ) -> None:
        super().__init__()
        if membership not in MEMBERSHIPS:
            raise ConfigError(f"unknown membership {membership!r}; choose one of {', '.join(MEMBERSHIPS)}")
        for name, value in (("codewords", codewords), ("in_channels", in_channels), ("pool", pool)):
            require_int(name, value)
        if reduce_channels is not None:
            require_int("reduce_channels", reduce_channels, minimum=1)
        if codewords < 2 or in_channels < 1 or pool < 1:
            raise ConfigError(
                f"BoF needs codewords >= 2, in_channels >= 1 and pool >= 1 "
                f"(got {codewords}, {in_channels}, {pool})"
            )
        if spatial_level not in (0, 1):
            raise ConfigError(f"spatial_level must be 0 or 1, got {spatial_level!r}")
        self.in_channels = in_channels
        self.codewords = codewords
        self.membership = membership
        self.squared = squared
        self.spatial_level = spatial_level
        self.pool = pool
        self.shared_width = shared_width
        self.reduce = nn.Conv2d(in_channels, reduce_channels, 1) if reduce_channels else None
        dim = reduce_channels or in_channels
        self.codebook = nn.Parameter(torch.randn(codewords, dim) * 0.1)
        # RBF widths live in log space so they stay positive; logistic a, c are scalars.
        self.log_sigma = nn.Parameter(torch.zeros(1 if shared_width else codewords))
        self.a = nn.Parameter(torch.ones(()))
        self.c = nn.Parameter(torch.zeros(()))

    @property
    def out_features(self) -> int:
        """Histogram length: K at level 0, 4K at level 1."""
        return self.codewords * (4 if self.spatial_level else 1)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-pool and reduce channels: the feature vectors the codebook quantises."""
        check_feature_map(x, self.in_channels, self.codebook.dtype)
        if self.pool > 1 and min(x.shape[-2:]) >= self.pool:
            x = F.avg_pool2d(x, self.pool)
        if self.reduce is not None:
            x = self.reduce(x)
        return x

    def memberships(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, H', W') soft assignments."""
        x = self.prepare(x)
        if self.membership == "rbf":
            return rbf_membership(x, self.codebook, self.log_sigma.exp(), squared=self.squared)
        return logistic_membership(x, self.codebook, self.a, self.c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_features) histogram, each K-block summing to 1."""
        return bof_histogram(self.memberships(x), self.spatial_level)

    @torch.no_grad()
    def init_from_features(
        self,
        feature_maps: torch.Tensor,
        *,
        max_vectors: int = 20000,
        generator: torch.Generator | None = None,
    ) -> None:
        """k-means-initialise the codebook (and widths / logistic scale) from sampled features.

        Args:
            feature_maps: (B, C, H, W) maps from this exit's stage on training images.
            max_vectors: how many feature vectors to sample for k-means.
            generator: seeded generator.
        """
        x = self.prepare(feature_maps)
        vectors = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (N, C)
        if vectors.shape[0] > max_vectors:
            keep = torch.randperm(vectors.shape[0], generator=generator)[:max_vectors]
            vectors = vectors[keep]
        centroids = kmeans(vectors, self.codewords, generator=generator).to(vectors.dtype)
        self.codebook.copy_(centroids)
        d = torch.cdist(vectors, centroids)  # (N, K)
        if not self.squared:
            nearest = d.min(1).values
        else:
            nearest = d.square().min(1).values
        # Width = typical distance to the nearest codeword: memberships start soft, not one-hot.
        width = nearest.mean().clamp_min(1e-3)
        self.log_sigma.fill_(float(width.log()))
        sims = vectors @ centroids.T
        self.a.fill_(float(1.0 / sims.std().clamp_min(1e-3)))
        self.c.fill_(float(-sims.mean() / sims.std().clamp_min(1e-3)))
