"""Inference-time forms of a trained network: the same maths in fewer operations.

At batch 1 on a CPU, per-operator overhead, not MACs, decides speed (docs/method.md §7). Two
rewrites keep results equal to the training-time modules (tested to 1e-5):

* `fold_batchnorm`: every Conv2d followed by BatchNorm2d inside an `nn.Sequential`
  becomes one Conv2d (eval statistics folded into weight and bias).
* `FrozenBoFExits`: the BoF exits with their constants precomputed. RBF on squared
  distances becomes one batched matrix product with bias (2 v_k / sigma_k, -||v_k||^2 /
  sigma_k) minus ||x||^2 / sigma_k and a softmax; the logistic form (tanh(z) + 1) / 2 is
  sigmoid(2z). Histogram pooling, the x K rescaling and the shared classifier fold into
  one matrix per exit.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from bofexits.models.bof import BoFPooling
from bofexits.models.exits import BoFExits, ExitHeads, aggregate_histograms

__all__ = ["FrozenBoFExits", "fold_batchnorm", "freeze_exits"]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of `module` with Conv2d+BatchNorm2d pairs of every Sequential fused.

    >>> seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    >>> [type(m).__name__ for m in fold_batchnorm(seq)]
    ['Conv2d', 'ReLU']
    """
    module = copy.deepcopy(module).eval()
    if isinstance(module, nn.Sequential):
        return _fold_sequential(module)
    _fold_inplace(module)
    return module


def _fold_inplace(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            setattr(module, name, _fold_sequential(child))
        else:
            _fold_inplace(child)


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    out: list[nn.Module] = []
    children = list(seq)
    i = 0
    while i < len(children):
        m = children[i]
        nxt = children[i + 1] if i + 1 < len(children) else None
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d) and nxt.track_running_stats:
            out.append(fuse_conv_bn_eval(m, nxt))
            i += 2
            continue
        if isinstance(m, nn.Sequential):
            m = _fold_sequential(m)
        else:
            _fold_inplace(m)
        out.append(m)
        i += 1
    return nn.Sequential(*out)


def _region_matrix(
    height: int, width: int, level: int, dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """(H*W, R) weights that average positions into the histogram's regions (R = 1 or 4).

    Built by pooling the identity basis, so it matches `bof_histogram` exactly.
    """
    n = height * width
    basis = torch.eye(n, dtype=dtype, device=device).view(n, 1, height, width)
    return F.adaptive_avg_pool2d(basis, 1 if level == 0 else 2).view(n, -1)  # (N, R)


class _FrozenBoF:
    """One exit's soft quantiser with precomputed constants, in (B, K, N) layout.

    A 1x1 conv is a batched matrix product here (one `baddbmm`), and ||x||^2 one `vecdot`.
    """

    def __init__(self, pooling: BoFPooling) -> None:
        v = pooling.codebook.detach()  # (K, C)
        self.pool = pooling.pool
        self.reduce = copy.deepcopy(pooling.reduce).eval() if pooling.reduce is not None else None
        self.kind = "rbf_sq" if pooling.membership == "rbf" and pooling.squared else pooling.membership
        k = v.shape[0]
        if pooling.membership == "rbf":
            inv = pooling.log_sigma.detach().neg().exp()  # 1 / sigma, (K,)
            self.neg_inv_sigma = -inv.view(1, k, 1)
            if self.kind == "rbf_sq":  # -d/sigma = (2 x.v - ||v||^2)/sigma - ||x||^2/sigma
                self.weight = 2 * v * inv[:, None]
                self.bias = (-(v.square().sum(1)) * inv).view(1, k, 1)
            else:  # d^2 = ||v||^2 - 2 x.v + ||x||^2, then the sqrt
                self.weight = -2 * v
                self.bias = v.square().sum(1).view(1, k, 1)
        else:  # (tanh(a s + c) + 1) / 2 == sigmoid(2 a s + 2 c)
            a, c = pooling.a.detach(), pooling.c.detach()
            self.weight = 2 * a * v
            self.bias = (2 * c).expand(k).reshape(1, k, 1).clone()
        # Graph form: one 1x1 convolution over [x, x*x] gives z (and ||x||^2 / sigma_k) at once.
        if self.kind == "logistic":
            self.conv_weight = self.weight.reshape(k, -1, 1, 1)
        else:
            # the x*x channels: -||x||^2 / sigma_k (squared RBF) or +||x||^2 (distance, then the sqrt)
            second = (
                self.neg_inv_sigma.view(k, 1) if self.kind == "rbf_sq" else torch.ones(k, 1, dtype=v.dtype)
            )
            self.conv_weight = torch.cat([self.weight, second.expand(k, self.weight.shape[1])], 1)
            self.conv_weight = self.conv_weight.reshape(k, -1, 1, 1)
        self.conv_bias = self.bias.reshape(k)

    def memberships(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, N) memberships, summing to 1 over K."""
        if self.pool > 1 and min(x.shape[-2:]) >= self.pool:
            x = F.avg_pool2d(x, self.pool)
        if self.reduce is not None:
            x = self.reduce(x)
        xf = x.flatten(2)  # (B, C, N)
        z = torch.baddbmm(self.bias, self.weight.expand(xf.shape[0], -1, -1), xf)  # (B, K, N)
        if self.kind == "logistic":
            u = torch.sigmoid(z)
            return u / (u.sum(1, keepdim=True) + 1e-6)
        xx = torch.linalg.vecdot(xf, xf, dim=1).unsqueeze(1)  # (B, 1, N)
        if self.kind == "rbf_sq":
            return torch.softmax(torch.addcmul(z, xx, self.neg_inv_sigma), 1)
        return torch.softmax((z + xx).clamp_min_(0).sqrt_().mul_(self.neg_inv_sigma), 1)

    def memberships_graph(self, x: torch.Tensor) -> torch.Tensor:
        """`memberships` as 1x1 convolutions: the same values, in operators graph runtimes fuse well.

        Exported graphs (onnxruntime) run a Conv far faster than the batched matrix product and
        the separate squared-norm reduction the eager form uses.
        """
        if self.pool > 1 and min(x.shape[-2:]) >= self.pool:
            x = F.avg_pool2d(x, self.pool)
        if self.reduce is not None:
            x = self.reduce(x)
        if self.kind == "logistic":
            u = torch.sigmoid(F.conv2d(x, self.conv_weight, self.conv_bias)).flatten(2)
            return u / (u.sum(1, keepdim=True) + 1e-6)
        z = F.conv2d(torch.cat([x, x * x], 1), self.conv_weight, self.conv_bias).flatten(2)  # (B, K, N)
        if self.kind == "rbf_sq":
            return torch.softmax(z, 1)
        return torch.softmax(z.clamp_min(0).sqrt().mul(self.neg_inv_sigma), 1)


class FrozenBoFExits(ExitHeads):
    """`BoFExits` for inference only: same logits as `step`, constants precomputed.

    Histogram pooling, the x K rescaling and the classifier are all linear, so with a shared
    classifier they fold into one matrix per exit, M_i (classes, K*N_i), and the state carried
    between exits is the running sum of W h_j (classes wide) instead of the histograms:
    exit i costs one `baddbmm`, one `vecdot`, one `addcmul`, one softmax, one `linear` and
    two adds. Per-exit classifiers carry the histograms (k-major order) instead.

    Args:
        exits: trained BoF exits.
        feature_shapes: (C, H, W) of the map each exit reads (`MultiExitNetwork.feature_shapes`).
    """

    def __init__(self, exits: BoFExits, feature_shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.num_exits = exits.num_exits
        self.aggregation = exits.aggregation
        self.graph = False  # see `graph_form`
        self.shared = len(exits.classifiers) == 1
        self._bof = [_FrozenBoF(p) for p in exits.bof]  # type: ignore[arg-type]
        linears = [cast(nn.Linear, c) for c in exits.classifiers]
        self._bias = [c.bias.detach() for c in linears]
        k = exits.codewords
        self._fold: list[torch.Tensor] = []  # shared: (classes, K*N) per exit
        self._weights: list[torch.Tensor] = []  # (classes, K*R) in k-major order, x K folded in
        self._regions: list[torch.Tensor] = []  # (N, R)
        for i, module in enumerate(exits.bof):
            pooling = cast(BoFPooling, module)
            h, w = self._map_size(pooling, feature_shapes[i])
            p = _region_matrix(h, w, pooling.spatial_level, pooling.codebook.dtype, pooling.codebook.device)
            r = p.shape[1]
            lin = linears[0 if self.shared else i]
            wk = lin.weight.detach().view(-1, r, k).permute(0, 2, 1) * k  # (classes, K, R): x K folded in
            if self.shared:
                self._fold.append(torch.einsum("ckr,nr->ckn", wk, p).reshape(wk.shape[0], -1))
            self._regions.append(p)
            self._weights.append(wk.reshape(wk.shape[0], -1))

    def graph_form(self) -> FrozenBoFExits:
        """A copy whose quantisers run as 1x1 convolutions (`_FrozenBoF.memberships_graph`), for export."""
        other = copy.copy(self)
        other.graph = True
        return other

    @staticmethod
    def _map_size(pooling: BoFPooling, shape: tuple[int, ...]) -> tuple[int, int]:
        _, h, w = shape
        if pooling.pool > 1 and min(h, w) >= pooling.pool:
            h, w = h // pooling.pool, w // pooling.pool
        return h, w

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        bof = self._bof[index]
        u = bof.memberships_graph(features) if self.graph else bof.memberships(features)  # (B, K, N)
        if self.shared:
            if self.graph:  # pool, then classify: reads (classes, K*R) weights instead of (classes, K*N)
                contrib = F.linear(torch.matmul(u, self._regions[index]).flatten(1), self._weights[index])
            else:
                contrib = F.linear(u.flatten(1), self._fold[index])  # (B, classes) = W (K h_i), no bias
            if self.aggregation == "none" or state is None:
                total = contrib
            else:
                total = state + contrib
            scale = 1.0 / (index + 1) if self.aggregation == "mean" else 1.0
            return torch.add(self._bias[0], total, alpha=scale), total
        hist = torch.matmul(u, self._regions[index]).flatten(1)  # (B, K*R), k-major
        agg = aggregate_histograms(state, hist, index, self.aggregation)
        return F.linear(agg, self._weights[index], self._bias[index]), agg


def freeze_exits(exits: ExitHeads, feature_shapes: list[tuple[int, ...]]) -> ExitHeads:
    """The fastest inference form of `exits`: BoF exits frozen, BatchNorm folded in other heads."""
    if isinstance(exits, BoFExits):
        return FrozenBoFExits(exits, feature_shapes)
    return cast(ExitHeads, fold_batchnorm(exits))
