"""Budgeted batch classification: MSDNet, Huang et al. 2018, "Multi-Scale Dense Networks for
Resource Efficient Image Classification" (ICLR), section 4 ("budgeted batch classification").

Given a compute budget, the fraction of samples leaving at exit k follows a geometric law
p_k ∝ q^k. q is chosen (here by bisection) so that the expected compute sum_k p_k * macs_k
equals the budget; then, exit by exit on a validation split, the threshold of exit k is the
score above which N * p_k of the samples still remaining leave there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bofexits.errors import ConfigError, InputError, TargetUnreachableError
from bofexits.policies.scores import confidence
from bofexits.policies.thresholds import ScoreThreshold, check_score, check_threshold

__all__ = ["BudgetedThreshold", "budget_fractions", "fit_budgeted_thresholds", "geometric_fractions"]

_BISECTION_STEPS = 200
_LOG_Q_RANGE = 60.0  # |log q| beyond this puts all but ~1e-26 of the samples at one end
_EDGE = 1e-12  # budgets this close to an end of the reachable range are that end


def geometric_fractions(log_q: float, num_exits: int) -> list[float]:
    """Fractions p_k ∝ q^k, k = 0..S-1, summing to 1 (computed in log space: no overflow).

    >>> [round(p, 4) for p in geometric_fractions(math.log(2.0), 3)]
    [0.1429, 0.2857, 0.5714]
    """
    logs = [k * log_q for k in range(num_exits)]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    return [w / total for w in weights]


def _relative_macs(exit_macs: Sequence[float], backbone_macs: float) -> list[float]:
    macs = [float(m) for m in exit_macs]
    if not macs or any(not (0 < m < math.inf) for m in macs):
        raise ConfigError(f"exit_macs must be positive finite numbers, got {list(exit_macs)}")
    if any(b < a for a, b in zip(macs, macs[1:], strict=False)):
        raise ConfigError(f"exit_macs must be cumulative (non-decreasing), got {macs}")
    if isinstance(backbone_macs, bool) or not 0 < float(backbone_macs) < math.inf:
        raise ConfigError(f"backbone_macs must be a positive finite number, got {backbone_macs!r}")
    return [m / float(backbone_macs) for m in macs]


def budget_fractions(exit_macs: Sequence[float], budget: float, backbone_macs: float) -> list[float]:
    """Geometric exit fractions whose expected compute equals `budget`.

    Every compute number in bofexits is a fraction of the plain backbone's MACs, budgets
    included; running to the end costs a little more than 1 (the exits ran too).

    Args:
        exit_macs: S cumulative MACs of leaving at each exit (`CostTable.macs_at_exit()`).
        budget: target mean MACs as a fraction of `backbone_macs`.
        backbone_macs: MACs of the plain backbone (`CostTable.backbone_macs`).

    Returns:
        S fractions p_k ∝ q^k with sum_k p_k * exit_macs[k] = budget * backbone_macs.

    Raises:
        TargetUnreachableError: budget outside [exit_macs[0], exit_macs[-1]] / backbone_macs.

    >>> [round(p, 6) for p in budget_fractions([1.0, 2.0], 0.75, 2.0)]
    [0.5, 0.5]
    """
    rel = _relative_macs(exit_macs, backbone_macs)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget != budget:
        raise ConfigError(f"budget must be a number (a fraction of the backbone's MACs), got {budget!r}")
    low, high = rel[0], rel[-1]
    if not low - _EDGE <= budget <= high + _EDGE:
        raise TargetUnreachableError(
            f"budget {budget:g} is unreachable: the reachable range is [{low:.6g}, {high:.6g}] of the "
            f"backbone's MACs ({low:.6g} = everything leaves at exit 1, {high:.6g} = everything runs to the "
            "end, exits included)"
        )
    s = len(rel)
    if budget <= low + _EDGE:
        return [1.0] + [0.0] * (s - 1)
    if budget >= high - _EDGE:
        return [0.0] * (s - 1) + [1.0]

    def compute(log_q: float) -> float:
        return sum(p * r for p, r in zip(geometric_fractions(log_q, s), rel, strict=True))

    lo, hi = -_LOG_Q_RANGE, _LOG_Q_RANGE  # compute() increases with log q
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if compute(mid) < budget:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return geometric_fractions((lo + hi) / 2, s)


def _thresholds_for_fractions(scores: list[torch.Tensor], fractions: Sequence[float]) -> list[float]:
    """Exit by exit, the threshold at which round(N * cumsum(p)[k]) samples have left by exit k.

    Ties at a threshold let a few more leave; later targets are cumulative, so they absorb it.
    """
    n = scores[0].shape[0]
    remaining = torch.ones(n, dtype=torch.bool)
    cumulative, left = 0.0, 0
    thresholds = []
    for k, s in enumerate(scores):
        cumulative += fractions[k]
        want = round(n * cumulative) - left
        candidates = s[remaining]
        if want <= 0:
            t = math.inf
        elif want >= candidates.numel():
            t = -math.inf
        else:
            t = float(candidates.sort(descending=True).values[want - 1])
        stop = remaining & (s >= t)
        remaining &= ~stop
        left += int(stop.sum())
        thresholds.append(t)
    return thresholds


def fit_budgeted_thresholds(
    exit_logits: Sequence[torch.Tensor],
    exit_macs: Sequence[float],
    budget: float,
    backbone_macs: float,
    score: str = "max_prob",
) -> list[float]:
    """MSDNet thresholds meeting a mean-compute budget on a validation split.

    Args:
        exit_logits: early exits only, [(N, classes)] * (S-1), on a VALIDATION split (never
            the test data the policy is then evaluated on).
        exit_macs: S cumulative MACs of leaving at each exit, the final one last.
        budget: target mean MACs as a fraction of `backbone_macs`.
        backbone_macs: MACs of the plain backbone, the reference of every compute fraction.
        score: confidence score the thresholds apply to.

    Returns:
        S-1 thresholds for `BudgetedThreshold` (-inf: all remaining leave, +inf: none do).

    Raises:
        TargetUnreachableError: budget outside [exit_macs[0], exit_macs[-1]] / backbone_macs.

    >>> val = [torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])]
    >>> fit_budgeted_thresholds(val, [1.0, 2.0], 0.75, 2.0, "max_logit")  # half leave at exit 1
    [2.0]
    """
    check_score(score)
    if not exit_logits:
        raise InputError("fit_budgeted_thresholds needs the logits of at least one early exit")
    if len(exit_macs) != len(exit_logits) + 1:
        raise ConfigError(
            f"exit_macs must have one value per exit (S = {len(exit_logits) + 1}, the final one included), "
            f"got {len(exit_macs)}"
        )
    n = exit_logits[0].shape[0]
    if n == 0 or any(lg.dim() != 2 or lg.shape[0] != n for lg in exit_logits):
        shapes = [tuple(lg.shape) for lg in exit_logits]
        raise InputError(f"exit_logits must be non-empty (N, classes) tensors with the same N, got {shapes}")
    fractions = budget_fractions(exit_macs, budget, backbone_macs)
    with torch.no_grad():
        scores = [confidence(lg, score).cpu() for lg in exit_logits]
    if not all(bool(torch.isfinite(s).all()) for s in scores):
        raise InputError("validation logits contain NaN or inf; the model weights are broken, retrain")
    return _thresholds_for_fractions(scores, fractions)


class BudgetedThreshold(ScoreThreshold):
    """MSDNet's budgeted rule: stop at exit i when score_i(x) >= thresholds[i].

    Args:
        thresholds: S-1 thresholds, usually from `fit_budgeted_thresholds` (or `fit`).
        score: the confidence score they were fitted on.
        budget: the budget they were fitted for (recorded in `describe` only).

    >>> BudgetedThreshold([0.9, 0.6]).stop(1, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), None)[0].tolist()
    [True, False]
    """

    name = "budgeted"

    def __init__(
        self, thresholds: Sequence[float], score: str = "max_prob", budget: float | None = None
    ) -> None:
        super().__init__(thresholds, score)
        self.budget = None if budget is None else check_threshold(budget, 0.0, math.inf, "budget")

    @classmethod
    def fit(
        cls,
        exit_logits: Sequence[torch.Tensor],
        exit_macs: Sequence[float],
        budget: float,
        backbone_macs: float,
        score: str = "max_prob",
    ) -> BudgetedThreshold:
        """The policy whose thresholds `fit_budgeted_thresholds` fits on validation logits."""
        return cls(
            fit_budgeted_thresholds(exit_logits, exit_macs, budget, backbone_macs, score), score, budget
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "budget": self.budget}
