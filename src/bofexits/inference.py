"""Inference-time forms of a trained network: the same maths in fewer operations.

At batch 1 on a CPU, per-operator overhead, not MACs, decides speed (METHOD §7). Two
rewrites keep results equal to the training-time modules (tested to 1e-5):

* `fold_batchnorm`: every Conv2d followed by BatchNorm2d inside an `nn.Sequential`
  becomes one Conv2d (eval statistics folded into weight and bias).
* `FrozenBoFExits`: the BoF exits with their constants precomputed. RBF on squared
  distances becomes one 1x1 conv with bias (2 v_k / sigma_k, -||v_k||^2 / sigma_k) minus
  ||x||^2 / sigma_k, a softmax and a mean; the logistic form (tanh(z) + 1) / 2 is
  sigmoid(2z), again one conv with bias.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .bof import BoFPooling
from .exits import BoFExits, ExitHeads, aggregate_histograms

__all__ = ["FrozenBoFExits", "fold_batchnorm", "freeze_exits"]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of `module` with Conv2d+BatchNorm2d pairs of every Sequential fused.

    >>> seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    >>> [type(m).__name__ for m in fold_batchnorm(seq)]
    ['Conv2d', 'ReLU']
    """
    module = copy.deepcopy(module).eval()
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


class _FrozenBoF:
    """One exit's BoF pooling with precomputed constants (no parameters, no autograd)."""

    def __init__(self, pooling: BoFPooling, scale: float) -> None:
        v = pooling.codebook.detach()
        self.pool = pooling.pool
        self.reduce = copy.deepcopy(pooling.reduce).eval() if pooling.reduce is not None else None
        self.level = pooling.spatial_level
        self.kind = "rbf_sq" if pooling.membership == "rbf" and pooling.squared else pooling.membership
        self.scale = scale
        if pooling.membership == "rbf":
            inv = pooling.log_sigma.detach().neg().exp()  # 1 / sigma, (K,)
            self.inv_sigma = inv
            self.neg_inv_sigma = -inv.view(1, -1, 1, 1)
            self.weight = (2 * v * inv[:, None])[:, :, None, None]  # (K, C, 1, 1)
            self.bias = -(v.square().sum(1)) * inv
            self.codebook = v
        else:
            a, c = pooling.a.detach(), pooling.c.detach()
            self.weight = (2 * a * v)[:, :, None, None]
            self.bias = (2 * c).expand(v.shape[0]).clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1 and min(x.shape[-2:]) >= self.pool:
            x = F.avg_pool2d(x, self.pool)
        if self.reduce is not None:
            x = self.reduce(x)
        if self.kind == "rbf_sq":
            z = torch.addcmul(
                F.conv2d(x, self.weight, self.bias), x.square().sum(1, keepdim=True), self.neg_inv_sigma
            )
            u = torch.softmax(z, 1)  # (B, K, H, W)
        elif self.kind == "rbf":  # distances, not squared: the sqrt needs the full distance
            xx = x.square().sum(1, keepdim=True)
            d2 = (
                xx
                + self.codebook.square().sum(1).view(1, -1, 1, 1)
                - F.conv2d(x, self.codebook[:, :, None, None]) * 2
            )
            u = torch.softmax(d2.clamp_min(0).sqrt() * self.neg_inv_sigma, 1)
        else:
            u = torch.sigmoid(F.conv2d(x, self.weight, self.bias))
            u = u / (u.sum(1, keepdim=True) + 1e-6)  # (tanh(z) + 1) / 2 == sigmoid(2z)
        if self.level == 0:
            return u.mean((2, 3)).mul_(self.scale)  # (B, K)
        return F.adaptive_avg_pool2d(u, 2).permute(0, 2, 3, 1).flatten(1).mul_(self.scale)


class FrozenBoFExits(ExitHeads):
    """`BoFExits` for inference only: same `step` contract, constants precomputed."""

    def __init__(self, exits: BoFExits) -> None:
        super().__init__()
        self.num_exits = exits.num_exits
        self.aggregation = exits.aggregation
        self._bof = [_FrozenBoF(p, float(exits.codewords)) for p in exits.bof]  # type: ignore[arg-type]
        linears = [cast(nn.Linear, c) for c in exits.classifiers]
        self._classifiers = [(c.weight.detach(), c.bias.detach()) for c in linears]

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        hist = self._bof[index](features)
        agg = aggregate_histograms(state, hist, index, self.aggregation)
        w, b = self._classifiers[0 if len(self._classifiers) == 1 else index]
        return F.linear(agg, w, b), agg


def freeze_exits(exits: ExitHeads) -> ExitHeads:
    """The fastest inference form of `exits` (BoF exits are frozen; other heads are returned as they are)."""
    if isinstance(exits, BoFExits):
        return FrozenBoFExits(exits)
    return exits
