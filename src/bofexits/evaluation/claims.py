"""The paper's three claims, checked against a policy comparison (`bofexits.evaluation.compare`).

(a) a more balanced distribution of samples over the exits, (b) one interpretable knob from
fastest to most accurate, (c) higher accuracy and less inference time than existing rules;
each with its numeric targets, and a verdict with a reading of the numbers where they do not
support it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bofexits.evaluation.points import Point, cheapest_reaching
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields
from bofexits.reporting.format import fractions, pct, pp, times

if TYPE_CHECKING:
    from bofexits.evaluation.comparison import Comparison, FamilyResult

__all__ = [
    "BALANCE_TARGET",
    "BASELINES",
    "OVERHEAD_LIMIT",
    "ORACLE_RATIO_LIMIT",
    "Check",
    "Claim",
    "check_claims",
]

BASELINES: tuple[str, ...] = ("max-softmax", "entropy", "patience")
"""The existing rules the proposed one is held against (claim c)."""
BALANCE_TARGET = 0.75
"""Claim (a): the smallest balance at the knee that counts as balanced."""
ORACLE_RATIO_LIMIT = 1.3
"""Claim (c): the knee may use at most this multiple of the oracle's MACs at the same accuracy."""
OVERHEAD_LIMIT = 0.02
"""Claim (c): a decision may cost at most this share of the backbone's batch-1 time."""
_FASTEST = 0.999  # share at exit 1 that counts as "everything leaves at exit 1"
_SPAN_TOLERANCE = 0.001  # the knob's last point may miss the full network by this much


@dataclass
class Check:
    """One numeric target of a claim: what is checked, what was measured, whether it is met (None: n/a)."""

    check: str
    measured: str
    met: bool | None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return from_fields(cls, data, "claim check")


@dataclass
class Claim:
    """One of the paper's claims with its checks.

    Attributes:
        claim: "a", "b" or "c".
        statement: the claim in the paper's words.
        checks: its numeric targets.
        verdict: "supported" (every measurable check met), "not supported" (none met) or "partly".
        why: where not supported, a reading of the numbers ("" otherwise).
    """

    claim: str
    statement: str
    checks: list[Check] = field(default_factory=list)
    verdict: str = ""
    why: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "statement": self.statement,
            "checks": [c.to_dict() for c in self.checks],
            "verdict": self.verdict,
            "why": self.why,
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Claim:
        check_schema(data, "claim")
        require(data, "claim", "claim", "statement", "checks", "verdict", "why")
        checks = [Check.from_dict(c) for c in data["checks"]]
        return cls(data["claim"], data["statement"], checks, data["verdict"], data["why"])


def _sentence(parts: list[str]) -> str:
    """Clauses joined into one sentence.

    >>> _sentence(["a is 1", "b is 2"])
    'A is 1; b is 2.'
    """
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def _claim(key: str, statement: str, checks: list[Check], why: str) -> Claim:
    results = [c.met for c in checks if c.met is not None]
    verdict = "supported" if results and all(results) else "not supported" if not any(results) else "partly"
    return Claim(key, statement, checks, verdict, "" if verdict == "supported" else why)


def check_claims(comparison: Comparison) -> list[Claim]:
    """The paper's three claims (and their numeric targets), each checked against this comparison."""
    return [_balance(comparison), _one_knob(comparison), _accuracy_and_time(comparison)]


def _medians_note(comparison: Comparison) -> str:
    medians = comparison.exit_confidence_medians
    if not medians:
        return ""
    return (
        f"the median max-softmax at exits 1..{len(medians)} on the calibration data is "
        f"{fractions(medians, 3)} (a spread of {max(medians) - min(medians):.3f})"
    )


def _balance(comparison: Comparison) -> Claim:
    """(a): balance at the knee, absolutely and against max-softmax at the same accuracy."""
    statement = "a more balanced distribution of samples over the exits"
    knee, soft = comparison.proposed.knee, comparison.family("max-softmax")
    if knee is None:
        best = max(comparison.proposed.points, key=lambda p: p.accuracy)
        tol = f"within {pp(comparison.max_drop, 1, signed=False)} of the full network"
        checks = [Check(f"a knee exists ({tol})", "none", False)]
        why = f"no point comes {tol} ({pct(comparison.full_accuracy)}); the most accurate reaches {pct(best.accuracy)}"
        return _claim("a", statement, checks, why)
    other = cheapest_reaching(soft.points, knee.accuracy) if soft else None
    checks = [
        Check(
            f"balance at the knee >= {BALANCE_TARGET:g}",
            f"{knee.balance:.3f} (beta={knee.value:g}, {pct(knee.accuracy)} at {pct(knee.relative_macs)} MACs)",
            knee.balance >= BALANCE_TARGET,
        ),
        Check(
            "balance higher than max-softmax's at the same accuracy",
            f"{knee.balance:.3f} vs {other.balance:.3f} (max-softmax at {pct(other.accuracy)}, "
            f"{pct(other.relative_macs)} MACs)"
            if other
            else "max-softmax never reaches that accuracy",
            knee.balance > other.balance if other else True,
        ),
    ]
    reasons = []
    if other is not None:
        reasons.append(
            f"max-softmax reaches the knee's accuracy with balance {other.balance:.3f} against {knee.balance:.3f}"
        )
    if note := _medians_note(comparison):
        reasons.append(
            "a global threshold piles samples up at one end only when early exits are much less confident "
            f"than late ones, and {note}"
        )
    return _claim("a", statement, checks, _sentence(reasons))


def _one_knob(comparison: Comparison) -> Claim:
    """(b): compute grows with beta, and beta spans exit 1 only to the full network's accuracy."""
    pts = comparison.proposed.points
    macs = [p.relative_macs for p in pts]
    drops = sum(1 for a, b in zip(macs, macs[1:], strict=False) if b < a - 1e-12)
    first, last = pts[0], pts[-1]
    checks = [
        Check(
            "mean compute never decreases as beta grows (test set, every grid point)",
            f"{len(pts)} points, {drops} decreases",
            drops == 0,
        ),
        Check(
            "the knob spans fastest (everything at exit 1) to the full network's accuracy",
            f"beta={first.value:g}: {pct(first.exit_fractions[0])} at exit 1; "
            f"beta={last.value:g}: {pct(last.accuracy)} (full {pct(comparison.full_accuracy)})",
            first.exit_fractions[0] >= _FASTEST
            and last.accuracy >= comparison.full_accuracy - _SPAN_TOLERANCE,
        ),
    ]
    reasons = [f"{drops} of {len(pts) - 1} steps of beta lower the compute"] if drops else []
    if not checks[1].met:
        reasons.append(
            f"the knob runs from {pct(first.exit_fractions[0])} at exit 1 to {pct(last.accuracy)} "
            f"against the full network's {pct(comparison.full_accuracy)}"
        )
    return _claim(
        "b", "one interpretable hyper-parameter from fastest to most accurate", checks, _sentence(reasons)
    )


def _level_checks(comparison: Comparison) -> tuple[list[Check], list[tuple[float, float, str]]]:
    """Accuracy at each compute level against the best baseline; and (level, difference, rival) per level."""
    checks, diffs = [], []
    costs = comparison.costs
    for level, p in comparison.proposed.at_levels.items():
        name = f"accuracy at {level:.0%} of the compute >= best of {', '.join(BASELINES)}"
        if p is None:
            exit1 = costs.macs_at_exit()[0] / costs.backbone_macs
            checks.append(Check(name, f"unreachable: exit 1 alone costs {pct(exit1)} of the backbone", None))
            continue
        best = comparison.best_baseline(level, BASELINES)
        if best is None:
            checks.append(Check(name, "no baseline reaches this level", True))
            continue
        rival, q = best
        diff = p.accuracy - q.accuracy
        diffs.append((level, diff, rival))
        checks.append(Check(name, f"{pct(p.accuracy)} vs {rival} {pct(q.accuracy)} ({pp(diff)})", diff >= 0))
    return checks, diffs


def _speed_checks(comparison: Comparison, knee: Point) -> tuple[list[Check], list[str]]:
    """Batch-1 speedup at the knee's accuracy against the global-threshold rules (same-round ratios);
    and a clause for each rule that is faster."""
    checks, slower = [], []
    for name in ("max-softmax", "entropy"):
        fam: FamilyResult | None = comparison.family(name)
        other = cheapest_reaching(fam.points, knee.accuracy) if fam else None
        if other is None or other.timing is None or knee.timing is None:
            continue
        # Ratios to the backbone timed in the same rounds: raw ms drift between rounds.
        mine, theirs = knee.timing.batch1_speedup, other.timing.batch1_speedup
        checks.append(
            Check(
                f"batch-1 speedup at the knee's accuracy above {name}'s",
                f"{times(mine)} vs {times(theirs)} over the plain backbone",
                mine >= theirs,
            )
        )
        if mine < theirs:
            slower.append(
                f"at the knee's accuracy {name} runs at {times(theirs)} the backbone's speed against "
                f"{times(mine)} ({pct(other.relative_macs)} vs {pct(knee.relative_macs)} of the MACs)"
            )
    return checks, slower


def _oracle_reach(comparison: Comparison, knee: Point) -> float | None:
    """The oracle's least relative MACs reaching the knee's accuracy (None if it never does)."""
    return next((m for m, a in comparison.frontier if a >= knee.accuracy - 1e-12), None)


def _oracle_check(knee: Point, reach: float) -> Check:
    """The knee's MACs against the oracle's at the same accuracy."""
    ratio = knee.relative_macs / reach
    return Check(
        f"within {ORACLE_RATIO_LIMIT:g}x of the oracle's mean MACs at the same accuracy",
        f"{pct(knee.relative_macs)} vs oracle {pct(reach)}: {times(ratio)}",
        ratio <= ORACLE_RATIO_LIMIT,
    )


def _overhead_checks(comparison: Comparison) -> list[Check]:
    return [
        Check(
            f"decision overhead per exit < {pct(OVERHEAD_LIMIT, 0)} of the backbone's batch-1 time",
            f"{row.us_per_decision:.1f} µs = {pct(row.fraction_of_backbone_batch1)}",
            row.fraction_of_backbone_batch1 < OVERHEAD_LIMIT,
        )
        for row in comparison.decision_overhead
        if row.policy == "proposed"
    ]


def _accuracy_and_time(comparison: Comparison) -> Claim:
    """(c): matched-compute accuracy, speed, oracle gap and decision overhead."""
    checks, diffs = _level_checks(comparison)
    reasons = []
    if losses := [d for d in diffs if d[1] < 0]:
        level, diff, rival = min(losses, key=lambda d: d[1])
        reasons.append(
            f"at matched compute it trails by at most {pp(-diff, signed=False)} ({rival}, {level:.0%} of the MACs)"
        )
    knee = comparison.proposed.knee
    reach = _oracle_reach(comparison, knee) if knee is not None else None
    if knee is not None:
        speed, slower = _speed_checks(comparison, knee)
        checks += [*speed, *([_oracle_check(knee, reach)] if reach is not None else [])]
        reasons += slower
    overhead = _overhead_checks(comparison)
    checks += overhead
    reasons += [
        f"a decision costs {c.measured} of the backbone's batch-1 time" for c in overhead if c.met is False
    ]
    if note := _medians_note(comparison):
        reasons.append(note)
    if knee is not None and reach is not None:
        reasons.append(
            f"the oracle reaches the knee's accuracy with {pct(reach)} of the MACs against the knee's "
            f"{pct(knee.relative_macs)}: the room any confidence rule leaves"
        )
    statement = "higher accuracy and less inference time than existing rules"
    return _claim("c", statement, checks, _sentence(reasons))
