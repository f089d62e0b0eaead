"""Inference-time forms of a trained network: the same maths in fewer operations.

At batch 1 on a CPU, per-operator overhead, not MACs, decides speed (docs/method.md §7). Two
rewrites keep results equal to the training-time modules (tested to 1e-5):

* `fold_batchnorm`: every Conv2d followed by BatchNorm2d inside an `nn.Sequential`
  becomes one Conv2d (eval statistics folded into weight and bias).
* `FrozenBoFExits`: the BoF exits with their constants precomputed. RBF on squared
  distances becomes one matrix product with bias (2 v_k / sigma_k, -||v_k||^2 / sigma_k)
  minus ||x||^2 / sigma_k and a softmax. When every codeword has the same width
  (`shared_width`), ||x||^2 / sigma is one number per position and cancels in the softmax
  over codewords, so the quantiser is one matrix product (a 1x1 convolution; a channel
  reduction folds into it too) and one softmax: the "fused" head. The logistic form
  (tanh(z) + 1) / 2 is sigmoid(2z). Histogram pooling, the x K rescaling and the shared
  classifier fold into one matrix per exit.
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


FOLD_SLACK_MACS = 65536
"""How many extra MACs a folded classifier may cost before pooling-then-classifying wins.

Folding position pooling into the classifier saves one operator (~3-5 us at batch 1 on a CPU,
where a small exit is dispatch-bound) but multiplies the classifier by the map's positions:
a (classes, K*H*W) matrix. On the 28x28 demo network it is 63k MACs and saves ~4 us; on
ResNet-50's first exit (56x56, 1000 classes) it would be 100M weights (400 MB) and 16 ms per
image against 1.5 ms unfolded. So fold only while the folded product costs at most this many
MACs more than the pooling matmul plus the pooled classifier (docs/decisions.md).
"""


def fold_pays(classes: int, codewords: int, positions: int, regions: int) -> bool:
    """Whether folding position pooling into a shared classifier costs at most `FOLD_SLACK_MACS` more.

    >>> fold_pays(10, 32, 14 * 14, 4)  # demo network, exit 1: 63k vs 26k MACs
    True
    >>> fold_pays(1000, 32, 56 * 56, 1)  # ResNet-50 at 224, exit 1: 100M vs 132k MACs
    False
    """
    folded = classes * codewords * positions
    pooled = positions * codewords * regions + classes * codewords * regions
    return folded <= pooled + FOLD_SLACK_MACS


class _FrozenBoF:
    """One exit's soft quantiser with precomputed constants, in position-major (B, N, K) layout.

    Position-major because the softmax over codewords then runs over the contiguous last
    dimension (2-3x faster at batch 1 than over dim 1 of (B, K, N)), and because a
    channels-last feature map is already (B, H, W, C) in memory, so (B, N, C) is a free view.
    """

    def __init__(self, pooling: BoFPooling, *, fuse: bool = True) -> None:
        v = pooling.codebook.detach()  # (K, C)
        self.pool = pooling.pool
        self.reduce = copy.deepcopy(pooling.reduce).eval() if pooling.reduce is not None else None
        # "rbf_sq", "rbf" (distances), "logistic", or "rbf_fused" (squared, one width: see below)
        self.kind: str = "rbf_sq" if pooling.membership == "rbf" and pooling.squared else pooling.membership
        k = v.shape[0]
        if pooling.membership == "rbf":
            inv = pooling.log_sigma.detach().neg().exp().expand(k)  # 1 / sigma, (K,)
            self.neg_inv_sigma = -inv.reshape(1, 1, k)
            if fuse and self.kind == "rbf_sq" and bool((inv == inv[0]).all()):
                self.kind = "rbf_fused"  # one width: -||x||^2 / sigma is the same for every k
            if self.kind in ("rbf_sq", "rbf_fused"):  # -d/sigma = (2 x.v - ||v||^2)/sigma - ||x||^2/sigma
                weight = 2 * v * inv[:, None]
                bias = -(v.square().sum(1)) * inv
            else:  # d^2 = ||v||^2 - 2 x.v + ||x||^2, then the sqrt
                weight = -2 * v
                bias = v.square().sum(1)
        else:  # (tanh(a s + c) + 1) / 2 == sigmoid(2 a s + 2 c)
            a, c = pooling.a.detach(), pooling.c.detach()
            weight = 2 * a * v
            bias = (2 * c).expand(k).clone()
        if self.kind == "rbf_fused" and self.reduce is not None:
            # z = W (R x + r) + b = (W R) x + (W r + b): the 1x1 reduction folds into the product
            r_weight = self.reduce.weight.detach().flatten(1)  # (C', C)
            r_bias = self.reduce.bias.detach() if self.reduce.bias is not None else None
            if r_bias is not None:
                bias = bias + weight @ r_bias
            weight = weight @ r_weight
            self.reduce = None
        self.weight_t = weight.t().contiguous()  # (C, K)
        self.bias2d = bias.view(1, k)
        self.neg_inv_sigma2d = (
            self.neg_inv_sigma.view(1, k) if pooling.membership == "rbf" else v.new_zeros(1, k)
        )
        # Graph form: one 1x1 convolution over [x, x*x] gives z (and ||x||^2 / sigma_k) at once;
        # over x alone when the ||x||^2 term cancels (fused) or is absent (logistic).
        if self.kind in ("logistic", "rbf_fused"):
            self.conv_weight = weight.reshape(k, -1, 1, 1)
        else:
            # the x*x channels: -||x||^2 / sigma_k (squared RBF) or +||x||^2 (distance, then the sqrt)
            second = (
                self.neg_inv_sigma.view(k, 1) if self.kind == "rbf_sq" else v.new_ones(k, 1)
            )
            self.conv_weight = torch.cat([weight, second.expand(k, weight.shape[1])], 1).reshape(k, -1, 1, 1)
        self.conv_bias = bias.reshape(k)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1 and min(x.shape[-2:]) >= self.pool:
            x = F.avg_pool2d(x, self.pool)
        if self.reduce is not None:
            x = self.reduce(x)
        return x

    def memberships(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, K) memberships, summing to 1 over K (position-major)."""
        x = self._prepare(x)
        b, c = x.shape[0], x.shape[1]
        # (B*N, C): a view when channels-last; one GEMM over every position of every sample
        # (a batched bmm of B small products was 2x slower at batch 256)
        xt = x.permute(0, 2, 3, 1).reshape(-1, c)
        z = torch.addmm(self.bias2d, xt, self.weight_t)  # (B*N, K)
        if self.kind == "rbf_fused":
            u = torch.softmax(z, -1)
        elif self.kind == "logistic":
            u = torch.sigmoid(z)
            u = u / (u.sum(-1, keepdim=True) + 1e-6)
        else:
            xx = torch.linalg.vecdot(xt, xt).unsqueeze(-1)  # (B*N, 1)
            if self.kind == "rbf_sq":
                u = torch.softmax(torch.addcmul(z, xx, self.neg_inv_sigma2d), -1)
            else:
                u = torch.softmax((z + xx).clamp_min_(0).sqrt_().mul_(self.neg_inv_sigma2d), -1)
        return u.view(b, x.shape[2] * x.shape[3], u.shape[-1])  # explicit N: B may be 0

    def memberships_graph(self, x: torch.Tensor) -> torch.Tensor:
        """`memberships` as 1x1 convolutions, (B, K, N): the same values, in operators graph runtimes fuse well.

        Exported graphs (onnxruntime) run a Conv far faster than the batched matrix product and
        the separate squared-norm reduction the eager form uses.
        """
        x = self._prepare(x)
        if self.kind == "logistic":
            u = torch.sigmoid(F.conv2d(x, self.conv_weight, self.conv_bias)).flatten(2)
            return u / (u.sum(1, keepdim=True) + 1e-6)
        if self.kind == "rbf_fused":
            return torch.softmax(F.conv2d(x, self.conv_weight, self.conv_bias).flatten(2), 1)  # (B, K, N)
        z = F.conv2d(torch.cat([x, x * x], 1), self.conv_weight, self.conv_bias).flatten(2)  # (B, K, N)
        if self.kind == "rbf_sq":
            return torch.softmax(z, 1)
        return torch.softmax(z.clamp_min(0).sqrt().mul(self.neg_inv_sigma.view(1, -1, 1)), 1)


class FrozenBoFExits(ExitHeads):
    """`BoFExits` for inference only: same logits as `step`, constants precomputed, fewest operators.

    With a shared classifier everything after the memberships is linear, so exit i's logits are
    one `addmm`: ``logits_i = beta_i * logits_{i-1} + u_i @ M_i``, where the carried state is
    the previous exit's logits, beta_i encodes the aggregation (mean: i/(i+1), sum: 1, none: 0)
    and M_i holds the histogram pooling, the x K rescaling, the 1/(i+1) of the running mean and
    the classifier's bias (memberships sum to 1 per position, so b / N added to every column
    adds exactly b). When folding pooling in would make M_i large (`fold_pays`),
    the memberships are pooled into regions first (one more matmul). Per-exit classifiers carry
    the histograms instead. Exit i then costs ~5 operators at batch 1 against ~9 before.

    Args:
        exits: trained BoF exits.
        feature_shapes: (C, H, W) of the map each exit reads (`MultiExitNetwork.feature_shapes`).
        fuse: use the fused head where the widths allow it (default); False keeps the general
            form, the same logits with more operators (for before/after measurements).
    """

    def __init__(self, exits: BoFExits, feature_shapes: list[tuple[int, ...]], *, fuse: bool = True) -> None:
        super().__init__()
        self.num_exits = exits.num_exits
        self.aggregation = exits.aggregation
        self.graph = False  # see `graph_form`
        self.shared = len(exits.classifiers) == 1
        self._bof = [_FrozenBoF(p, fuse=fuse) for p in exits.bof]  # type: ignore[arg-type]
        linears = [cast(nn.Linear, c) for c in exits.classifiers]
        k = exits.codewords
        self._beta: list[float] = []
        self._folded: list[bool] = []
        self._matrix: list[torch.Tensor] = []  # (classes, N*K) folded or (classes, R*K), n/r-major
        self._matrix_k: list[torch.Tensor] = []  # the same, k-major, for the graph form's (B, K, N)
        self._pool_t: list[torch.Tensor] = []  # (R, N): averages positions into regions
        self._bias: list[torch.Tensor] = []  # per-exit classifiers only
        for i, module in enumerate(exits.bof):
            pooling = cast(BoFPooling, module)
            h, w = self._map_size(pooling, feature_shapes[i])
            p = _region_matrix(h, w, pooling.spatial_level, pooling.codebook.dtype, pooling.codebook.device)
            n, r = p.shape
            lin = linears[0 if self.shared else i]
            wk = lin.weight.detach().view(-1, r, k) * k  # (classes, R, K): x K folded in, r-major
            self._pool_t.append(p.t().contiguous())
            if not self.shared:
                self._add_matrix(wk)
                self._bias.append(lin.bias.detach())
                self._beta.append(0.0)
                self._folded.append(False)
                continue
            beta, scale, bias = self._aggregation_terms(i, lin.bias.detach())
            folded = fold_pays(wk.shape[0], k, n, r)
            if (
                folded
            ):  # (classes, N, K): pooling folded in; the bias spread so that it sums to b (sum of u = N)
                m = torch.einsum("crk,nr->cnk", wk, p) * scale + (bias / n).view(-1, 1, 1)
            else:  # (classes, R, K): regions pooled first; region histograms sum to R
                m = wk * scale + (bias / r).view(-1, 1, 1)
            self._add_matrix(m)
            self._beta.append(beta)
            self._folded.append(folded)
        # The fused head's eager fast path: (avg-pool), addmm, softmax, addmm, with no other call.
        self._fused = [
            self.shared and folded and bof.kind == "rbf_fused"
            for bof, folded in zip(self._bof, self._folded, strict=True)
        ]
        self._matrix_t = [m.t() for m in self._matrix]  # (N*K, classes) views

    def _add_matrix(self, m: torch.Tensor) -> None:
        """Keep (classes, P, K) as (classes, P*K) (eager form) and (classes, K*P) (graph form)."""
        self._matrix.append(m.reshape(m.shape[0], -1).contiguous())
        self._matrix_k.append(m.transpose(1, 2).reshape(m.shape[0], -1).contiguous())

    def _aggregation_terms(self, index: int, bias: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """(beta, scale, added bias) with logits_i = beta * logits_{i-1} + scale * W h_i + added bias."""
        if self.aggregation == "mean":
            return index / (index + 1), 1.0 / (index + 1), bias / (index + 1)
        if self.aggregation == "sum":
            return 1.0, 1.0, bias if index == 0 else torch.zeros_like(bias)
        return 0.0, 1.0, bias

    def graph_form(self) -> FrozenBoFExits:
        """A copy whose quantisers run as 1x1 convolutions (`_FrozenBoF.memberships_graph`), for export.

        Fused exits with a folded classifier keep `_fused_step` in the graph too: exported, its
        position-major Gemm, Softmax and Gemm ran as fast as or faster than Conv, Softmax over
        the codeword axis and Gemm in onnxruntime (docs/decisions.md, "Fused exit heads").
        """
        other = copy.copy(self)
        other.graph = True
        return other

    @staticmethod
    def _map_size(pooling: BoFPooling, shape: tuple[int, ...]) -> tuple[int, int]:
        _, h, w = shape
        if pooling.pool > 1 and min(h, w) >= pooling.pool:
            h, w = h // pooling.pool, w // pooling.pool
        return h, w

    def _features(self, index: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memberships (B, N*K), or region histograms (B, R*K) when not folded, and their matrix.

        Eager: n/r-major, from (B, N, K). Graph form: k-major, from the convolution's (B, K, N),
        with the matrix's columns in that order, so no Transpose node runs.
        """
        bof = self._bof[index]
        if self.graph:
            u = bof.memberships_graph(features)  # (B, K, N)
            if not self._folded[index]:
                u = torch.matmul(u, self._pool_t[index].t())  # (B, K, R)
            return u.flatten(1), self._matrix_k[index]
        u = bof.memberships(features)  # (B, N, K)
        if not self._folded[index]:
            u = torch.matmul(self._pool_t[index], u)  # (B, R, K) region averages
        return u.flatten(1), self._matrix[index]

    def _fused_step(self, index: int, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """Exit `index` as the fused head in eager mode: 3 kernels (4 with a pre-pool), no other call.

        At batch 1 each PyTorch operator costs a few microseconds of dispatch whatever its size,
        so the head's time is its operator count: the same maths as `_features` + `addmm`,
        inlined (docs/decisions.md, "Fused exit heads").
        """
        bof = self._bof[index]
        if bof.pool > 1 and min(x.shape[-2:]) >= bof.pool:
            x = F.avg_pool2d(x, bof.pool)
        b, c, h, w = x.shape
        xt = x.permute(0, 2, 3, 1).reshape(-1, c)  # (B*N, C): a view of an NHWC map
        u = torch.softmax(torch.addmm(bof.bias2d, xt, bof.weight_t), -1)  # (B*N, K)
        u = u.view(b, h * w * bof.bias2d.shape[1])  # (B, N*K); explicit size: B may be 0
        beta = self._beta[index]
        if state is None or beta == 0.0:
            return torch.mm(u, self._matrix_t[index])
        return torch.addmm(state, u, self._matrix_t[index], beta=beta)

    def step(
        self, index: int, features: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._fused[index]:  # eager and graph form alike: onnxruntime folds the permute into its Gemm
            logits = self._fused_step(index, features, state)
            return logits, logits
        u, matrix = self._features(index, features)
        if self.shared:
            beta = self._beta[index]
            if state is None or beta == 0.0:
                logits = F.linear(u, matrix)
            else:
                logits = torch.addmm(state, u, matrix.t(), beta=beta)
            return logits, logits
        agg = aggregate_histograms(state, u, index, self.aggregation)
        return F.linear(agg, matrix, self._bias[index]), agg


def freeze_exits(exits: ExitHeads, feature_shapes: list[tuple[int, ...]]) -> ExitHeads:
    """The fastest inference form of `exits`: BoF exits frozen, BatchNorm folded in other heads."""
    if isinstance(exits, BoFExits):
        return FrozenBoFExits(exits, feature_shapes)
    return cast(ExitHeads, fold_batchnorm(exits))
