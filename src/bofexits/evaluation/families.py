"""The exit policies a comparison holds side by side, each with its knob's grid.

Knob grids and the budgeted baseline's thresholds come from validation outputs only, so the
test set decides nothing about where a policy is sampled (docs/method.md §6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.grids import GRID_POINTS, beta_grid, quantile_grid
from bofexits.options import DEFAULT_SCORE, DEFAULT_VARIANT
from bofexits.policies import (
    BudgetedThreshold,
    CalibratedThreshold,
    EntropyThreshold,
    ExitCalibration,
    ExitPolicy,
    GlobalThreshold,
    Patience,
    SingleExit,
    confidence,
)

__all__ = ["Family", "policy_families"]


@dataclass
class Family:
    """One policy over its knob, ordered from fastest to most accurate.

    Attributes:
        name: short id (`proposed`, `max-softmax`, ...).
        label: legend text.
        knob: what `values` are (beta, threshold, patience, budget, exit).
        values: knob values, fastest first.
        make: knob value -> policy.
        proposed: the paper's rule in the configuration the checkpoint was calibrated for.
        timed: run for real and timed (others are simulated only).
    """

    name: str
    label: str
    knob: str
    values: list[float]
    make: Callable[[float], ExitPolicy]
    proposed: bool = False
    timed: bool = True


def _rule(cal: ExitCalibration, variant: str) -> Callable[[float], ExitPolicy]:
    return lambda beta: CalibratedThreshold(cal, beta, variant)


def _baselines(val_logits: Sequence[torch.Tensor], costs: CostTable, points: int) -> list[Family]:
    """The existing rules: global thresholds, patience, budgeted thresholds, single exits."""
    early = list(val_logits[:-1])
    s = len(val_logits)
    prob = torch.cat([confidence(lg, "max_prob") for lg in early])
    entropy = torch.cat([-confidence(lg, "neg_entropy") for lg in early]).clamp_min(0)
    macs = costs.macs_at_exit()
    low, high = macs[0] / costs.backbone_macs, macs[-1] / costs.backbone_macs
    budgets = [low + (high - low) * i / 20 for i in range(21)]
    return [
        Family(
            "max-softmax",
            "max-softmax threshold (SDN)",
            "threshold",
            quantile_grid(prob, points),
            lambda t: GlobalThreshold(min(max(t, 0.0), 1.0)),
        ),
        Family(
            "entropy",
            "entropy threshold (BranchyNet)",
            "threshold",
            quantile_grid(entropy, points)[::-1],
            lambda t: EntropyThreshold(max(t, 0.0)),
        ),
        Family(
            "patience",
            "patience (PABEE)",
            "patience",
            [float(k) for k in range(1, s + 1)],
            lambda k: Patience(int(k)),
        ),
        Family(
            "budgeted",
            "budgeted thresholds (MSDNet)",
            "budget",
            budgets,
            lambda b: BudgetedThreshold.fit(early, macs, b, costs.backbone_macs, "max_prob"),
        ),
        Family(
            "single-exit", "single exit", "exit", [float(e) for e in range(s)], lambda e: SingleExit(int(e))
        ),
    ]


def policy_families(
    calibrations: dict[str, ExitCalibration],
    val_logits: Sequence[torch.Tensor],
    costs: CostTable,
    *,
    score: str = DEFAULT_SCORE,
    variant: str = DEFAULT_VARIANT,
    points: int = GRID_POINTS,
) -> list[Family]:
    """Every policy with its knob grid; grids come from validation outputs, never the test set.

    Args:
        calibrations: the checkpoint's per-score statistics (proposed rule).
        val_logits: all S exits' logits on the validation split.
        costs: per-part MACs (budgets are fractions of the backbone's MACs).
        score, variant: the proposed rule's headline configuration.
        points: knob values per threshold policy.
    """
    proposed = Family(
        "proposed",
        f"proposed: {variant} rule on {score}",
        "beta",
        beta_grid(variant, points),
        _rule(calibrations[score], variant),
        proposed=True,
    )
    others = [
        Family(
            f"rule-{sc}-{v}",
            f"{v} rule on {sc}",
            "beta",
            beta_grid(v, points),
            _rule(calibrations[sc], v),
            timed=False,
        )
        for sc in ("max_prob", "max_logit")
        for v in ("mean", "quantile", "conditional", "accuracy")
        if (sc, v) != (score, variant)
        and sc in calibrations
        and (v != "accuracy" or calibrations[sc].accuracy is not None)  # older calibrations lack it
    ]
    return [proposed, *_baselines(val_logits, costs, points), *others]
