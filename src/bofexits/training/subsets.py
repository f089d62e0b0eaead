"""Which candidate exits to keep: the subset whose validation knee costs least (issue 22, item 2).

Candidate exits are trained once, together, on a frozen backbone (`bofexits.training.place`).
A subset is then scored from cached outputs without running the network again: each kept
exit's histogram comes from the cache, the running mean runs over the KEPT exits in order
(exit k of the subset classifies the mean of the kept histograms up to k, exactly what a
network built with only those exits computes, `BoFExits.step`), the proposed rule is
calibrated on the calibration split's outputs and its knee (`evaluation.points.knee_point`,
the report's knee) is found on the validation split over `beta_points`' grid. The test set is
never read.

Cost of a subset: its stages' counted MACs plus, at each exit a sample visits, that head's
cost. The head's cost is its counted MACs ("macs", the default: the knee's MACs are the
number the project reports; ties within `TIE_MACS` of the backbone's MACs go to the subset
whose visited heads take less measured batch-1 time) or its measured batch-1 time converted
to MACs at the backbone's own rate ("time": the plain backbone's MACs per second at batch 1,
so a head that takes 10% of the backbone's time costs 10% of its MACs). See
docs/decisions.md, "Cost-aware exit placement".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from bofexits.errors import ConfigError
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import MAX_DROP, Point, knee_point
from bofexits.models.exits import aggregate_histograms
from bofexits.policies.calibration import ExitCalibration
from bofexits.training.tuning import beta_points

__all__ = [
    "PLACEMENT_COSTS",
    "TIE_MACS",
    "CachedOutputs",
    "SubsetScore",
    "choose_subset",
    "score_subset",
    "subset_costs",
    "subset_logits",
]

PLACEMENT_COSTS = ("macs", "time")
"""How a head's cost enters the objective: its counted MACs, or its measured batch-1 time."""
TIE_MACS = 1e-3
"""Knees within this fraction of the backbone's MACs are a tie, broken by the heads' batch-1 time."""
EXHAUSTIVE_LIMIT = 127
"""Up to this many subsets (7 candidates) every one is scored; beyond, a local search."""


@dataclass
class CachedOutputs:
    """A split's outputs of every candidate exit, computed once.

    Attributes:
        histograms: per candidate, (N, K') histograms before aggregation (`BoFExits.histogram`).
        final: (N, classes) logits of the backbone's own classifier.
        labels: (N,) true classes.
    """

    histograms: list[torch.Tensor]
    final: torch.Tensor
    labels: torch.Tensor


def subset_logits(
    histograms: Sequence[torch.Tensor] | Mapping[int, torch.Tensor],
    keep: Sequence[int],
    classify: Callable[[int, torch.Tensor], torch.Tensor],
    aggregation: str,
) -> list[torch.Tensor]:
    """Logits of the kept exits: exit k classifies the running aggregate of the kept histograms 0..k.

    Args:
        histograms: per candidate, (N, K') histograms (a mapping needs only the kept ones).
        keep: candidate indices kept, increasing.
        classify: (candidate index, aggregate) -> logits (`BoFExits.classify`).
        aggregation: "mean", "sum" or "none" (`aggregate_histograms`).

    >>> hs = [torch.tensor([[0.0]]), torch.tensor([[3.0]]), torch.tensor([[6.0]])]
    >>> [t.item() for t in subset_logits(hs, [0, 2], lambda i, a: a, "mean")]
    [0.0, 3.0]
    """
    state: torch.Tensor | None = None
    out = []
    for k, i in enumerate(keep):
        state = aggregate_histograms(state, histograms[i], k, aggregation)
        out.append(classify(i, state))
    return out


def subset_costs(
    unit_macs: Sequence[int], points: Sequence[int], head_costs: Sequence[float], keep: Sequence[int]
) -> CostTable:
    """The cost table of the network with exits after the units `points[i]` for i in `keep`.

    >>> subset_costs([1, 2, 3, 4], [0, 1, 2], [10, 20, 30], [1]).macs_at_exit()
    [23, 30]
    """
    cuts = [points[i] for i in keep]
    bounds = [0, *(c + 1 for c in cuts), len(unit_macs)]
    stage_macs = [int(sum(unit_macs[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return CostTable(stage_macs, [int(round(head_costs[i])) for i in keep], [0] * len(stage_macs), 0)


@dataclass
class SubsetScore:
    """One subset on the validation split.

    Attributes:
        keep: candidate indices kept.
        knee: the validation knee (None: no beta came within the tolerance).
        objective: the knee's cost as a fraction of the backbone's MACs (heads as the objective counts them).
        knee_macs: the knee's counted MACs, a fraction of the backbone's.
        head_ms: mean batch-1 milliseconds per image spent in the heads visited at the knee.
        exit_accuracy: each kept exit's validation accuracy (the final classifier's last).
    """

    keep: list[int]
    knee: Point | None
    objective: float
    knee_macs: float
    head_ms: float
    exit_accuracy: list[float] = field(default_factory=list)


def score_subset(
    keep: Sequence[int],
    val: CachedOutputs,
    cal: CachedOutputs,
    classify: Callable[[int, torch.Tensor], torch.Tensor],
    *,
    aggregation: str,
    unit_macs: Sequence[int],
    points: Sequence[int],
    head_macs: Sequence[int],
    head_ms: Sequence[float],
    backbone_ms: float,
    cost: str = "macs",
    score: str = "max_prob",
    variant: str = "accuracy",
    grid: int = 100,
    max_drop: float = MAX_DROP,
) -> SubsetScore:
    """The validation knee of the network keeping exits `keep`, calibrated on `cal`."""
    keep = list(keep)
    val_logits = [*subset_logits(val.histograms, keep, classify, aggregation), val.final]
    cal_logits = subset_logits(cal.histograms, keep, classify, aggregation)
    calibration = ExitCalibration.fit(cal_logits, score, cal.labels)
    counted = subset_costs(unit_macs, points, head_macs, keep)
    backbone = counted.backbone_macs
    time_macs = [t / backbone_ms * backbone for t in head_ms]
    costs = counted if cost == "macs" else subset_costs(unit_macs, points, time_macs, keep)
    full = accuracy(val.final.argmax(1), val.labels)
    knee = knee_point(beta_points(val_logits, val.labels, calibration, costs, variant, grid), full, max_drop)
    accs = [accuracy(lg.argmax(1), val.labels) for lg in val_logits]
    if knee is None:
        return SubsetScore(keep, None, float("inf"), float("inf"), float("inf"), accs)
    fractions = torch.tensor(knee.exit_fractions, dtype=torch.float64)  # (S,)
    reach = fractions.flip(0).cumsum(0).flip(0)[:-1]  # share of samples that run head k
    macs = float((fractions * torch.tensor(counted.macs_at_exit(), dtype=torch.float64)).sum()) / backbone
    ms = float((reach * torch.tensor([head_ms[i] for i in keep], dtype=torch.float64)).sum())
    return SubsetScore(keep, knee, knee.relative_macs, macs, ms, accs)


def _better(a: SubsetScore, b: SubsetScore) -> bool:
    """Whether `a` beats `b`: a cheaper objective, or a tie in it and fewer head milliseconds."""
    if abs(a.objective - b.objective) <= TIE_MACS:
        return (a.head_ms, a.objective) < (b.head_ms, b.objective)
    return a.objective < b.objective


def choose_subset(
    num_candidates: int,
    evaluate: Callable[[Sequence[int]], SubsetScore],
    *,
    exhaustive_limit: int = EXHAUSTIVE_LIMIT,
) -> tuple[SubsetScore, list[SubsetScore]]:
    """The best non-empty subset of the candidates, and every subset scored on the way.

    Every subset is scored while there are at most `exhaustive_limit`. Beyond, a local search:
    from the best single exit, move to the best neighbour (one candidate added or removed)
    while it beats the current subset; each subset is scored once.

    >>> cost = lambda k: SubsetScore(list(k), None, abs(len(k) - 2) + k[0], 0.0, 0.0)
    >>> best, seen = choose_subset(3, cost)
    >>> best.keep, len(seen)
    ([0, 1], 7)
    >>> best, seen = choose_subset(3, cost, exhaustive_limit=3)
    >>> best.keep, len(seen)
    ([0, 1], 6)
    """
    if num_candidates < 1:
        raise ConfigError("placement needs at least one candidate exit; the backbone offers none")
    scored: dict[tuple[int, ...], SubsetScore] = {}

    def score(keep: Sequence[int]) -> SubsetScore:
        key = tuple(sorted(keep))
        if key not in scored:
            scored[key] = evaluate(list(key))
        return scored[key]

    def best_of(scores: Sequence[SubsetScore]) -> SubsetScore:
        best = scores[0]
        for s in scores[1:]:
            if _better(s, best):
                best = s
        return best

    if 2**num_candidates - 1 <= exhaustive_limit:
        subsets = [
            c for n in range(1, num_candidates + 1) for c in itertools.combinations(range(num_candidates), n)
        ]
        return best_of([score(k) for k in subsets]), list(scored.values())
    current = best_of([score([c]) for c in range(num_candidates)])
    while True:
        here = set(current.keep)
        neighbours = [sorted(here ^ {c}) for c in range(num_candidates)]
        step = best_of([score(k) for k in neighbours if k])
        if not _better(step, current):
            return current, list(scored.values())
        current = step
