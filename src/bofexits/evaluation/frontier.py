"""How good a set of exits is, in one typed summary: what training ablations compare.

The rule is not what bounds accuracy per compute (docs/decisions.md, "Better exits and the
default rule"); the exits are. So a change to how exits are trained or placed is judged by
the same few numbers: each exit's accuracy, the final exit's, the proposed rule's knee (the
cheapest point within 0.5 pp, and within 0.3 pp, of a reference accuracy), and how far that
knee is from the oracle, which sends every sample to its earliest correct exit. The reference
is passed in, so that a fine-tuned network is held to the accuracy of the network it started
from, not to a lowered one of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bofexits.evaluation.collect import summarize
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.grids import GRID_POINTS, beta_grid
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import MAX_DROP, Point, knee_point
from bofexits.inference.offline import oracle_frontier, simulate
from bofexits.options import DEFAULT_VARIANT
from bofexits.policies.calibrated import CalibratedThreshold
from bofexits.policies.calibration import ExitCalibration

__all__ = [
    "TIGHT_DROP",
    "FrontierSummary",
    "beta_points",
    "first_reaching",
    "oracle_reach",
    "simulated_points",
    "summarize_frontier",
]

TIGHT_DROP = 0.003
"""The second, tighter knee tolerance the exit ablations report (0.3 pp)."""


@dataclass(frozen=True)
class FrontierSummary:
    """A network's exits, judged on one data split.

    Attributes:
        exit_accuracy: accuracy of every exit, the final (the network's own classifier) last.
        reference_accuracy: what the knees are measured against.
        knee_macs / knee_accuracy / knee_beta: the cheapest rule point within `MAX_DROP` of the
            reference (None when no point is).
        tight_macs / tight_accuracy: the same within `TIGHT_DROP`.
        oracle_macs: the oracle's least mean compute reaching the knee's accuracy.
        oracle_ratio: knee_macs / oracle_macs (1.0: the rule routes as well as knowing the labels).
    """

    exit_accuracy: list[float]
    reference_accuracy: float
    knee_macs: float | None
    knee_accuracy: float | None
    knee_beta: float | None
    tight_macs: float | None
    tight_accuracy: float | None
    oracle_macs: float | None
    oracle_ratio: float | None

    @property
    def final_accuracy(self) -> float:
        return self.exit_accuracy[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulated_points(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    variant: str,
    betas: Sequence[float],
    *,
    indexed: bool = False,
) -> tuple[list[Point], list[torch.Tensor]]:
    """The rule at each of `betas`, simulated from all exits' outputs, and the exit each sample
    takes at each (`summarize`: knob "beta", the value, and with `indexed` its position in `betas`)."""
    out, exits = [], []
    for i, beta in enumerate(betas):
        r = simulate(CalibratedThreshold(calibration, beta, variant), list(exit_logits))
        where = {"index": i} if indexed else {}
        out.append(summarize(r.predictions, r.exit_index, labels, costs, knob="beta", value=beta, **where))
        exits.append(r.exit_index)
    return out, exits


def beta_points(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    variant: str,
    points: int = GRID_POINTS,
) -> list[Point]:
    """`simulated_points` over every beta of `beta_grid(variant, points)`, each with its grid index,
    as the policy comparison's points are."""
    betas = beta_grid(variant, points)
    return simulated_points(exit_logits, labels, calibration, costs, variant, betas, indexed=True)[0]


def oracle_reach(
    exit_logits: Sequence[torch.Tensor], labels: torch.Tensor, costs: CostTable, acc: float
) -> float | None:
    """The oracle's least mean compute (fraction of the backbone's MACs) reaching accuracy `acc`, or None."""
    macs, accs = oracle_frontier(exit_logits, labels, costs.macs_at_exit())
    return first_reaching(zip((macs / costs.backbone_macs).tolist(), accs.tolist(), strict=True), acc)


def first_reaching(frontier: Iterable[tuple[float, float]], accuracy: float) -> float | None:
    """The compute of the first (cheapest) (compute, accuracy) frontier point reaching `accuracy`, or None.

    >>> first_reaching([(0.2, 0.8), (0.3, 0.9), (0.5, 0.95)], 0.9), first_reaching([(0.2, 0.8)], 0.9)
    (0.3, None)
    """
    return next((m for m, a in frontier if a >= accuracy - 1e-12), None)


def summarize_frontier(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    *,
    reference_accuracy: float | None = None,
    variant: str = DEFAULT_VARIANT,
) -> FrontierSummary:
    """The `FrontierSummary` of the proposed rule (`calibration`, `variant`) on these exits' outputs.

    The rule's points are simulated over the dense beta grid the knee is tuned on
    (`beta_points`); `reference_accuracy` defaults to the final exit's.
    """
    per_exit = [accuracy(lg.argmax(1), labels) for lg in exit_logits]
    reference = per_exit[-1] if reference_accuracy is None else reference_accuracy
    points = beta_points(exit_logits, labels, calibration, costs, variant)
    knee: Point | None = knee_point(points, reference, MAX_DROP)
    tight = knee_point(points, reference, TIGHT_DROP)
    reach = oracle_reach(exit_logits, labels, costs, knee.accuracy) if knee is not None else None
    return FrontierSummary(
        exit_accuracy=per_exit,
        reference_accuracy=reference,
        knee_macs=knee.relative_macs if knee else None,
        knee_accuracy=knee.accuracy if knee else None,
        knee_beta=knee.value if knee else None,
        tight_macs=tight.relative_macs if tight else None,
        tight_accuracy=tight.accuracy if tight else None,
        oracle_macs=reach,
        oracle_ratio=knee.relative_macs / reach if knee is not None and reach else None,
    )
