"""The result of a policy comparison (`compare_policies`): every policy's points, its knee and
matched-compute points, how the chosen points were timed and checked, and the paper's claims
(`Check`, `Claim`: filled in by `bofexits.reporting.claims.check_claims`, which reads a comparison).

Written as `policies.json` (everything) and `policies.csv` (one row per policy and knob value).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bofexits._io import write_json, write_text
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import LEVELS, MAX_DROP, Point, at_compute
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields
from bofexits.evaluation.significance import Interval
from bofexits.evaluation.speedup import SpeedInterval
from bofexits.evaluation.timed import TimingSummary
from bofexits.evaluation.timing import Platform

__all__ = [
    "BASELINES",
    "CSV_FIELDS",
    "Check",
    "Claim",
    "Comparison",
    "ComparisonTiming",
    "Contrast",
    "DecisionOverhead",
    "FamilyResult",
    "RuntimeCheck",
    "comparison_rows",
    "save_comparison",
    "write_comparison_files",
]

_RERUN = "re-run `bofexits compare` (or `bofexits demo`) to write it again"
SOURCE = "simulated from all exits' outputs; points with timing were also run for real"


BASELINES: tuple[str, ...] = ("max-softmax", "entropy", "patience", "budgeted")
"""The existing rules the proposed one is held against (matched compute, claim c)."""


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


def _level_key(level: float) -> str:
    return f"{level:g}"


@dataclass
class FamilyResult:
    """One policy over its knob on the test set.

    Attributes:
        name, label, knob, proposed, timed: as the `Family` it came from.
        points: one per knob value, fastest first (`timing` set on the points run for real).
        knee: the cheapest point within `MAX_DROP` of the full network (None if none is).
        at_levels: compute level -> the most accurate point within it (None if none is).
    """

    name: str
    label: str
    knob: str
    proposed: bool
    timed: bool
    points: list[Point]
    knee: Point | None
    at_levels: dict[float, Point | None]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "knob": self.knob,
            "proposed": self.proposed,
            "timed": self.timed,
            "points": [p.to_dict() for p in self.points],
            "knee": None if self.knee is None else self.knee.to_dict(),
            "at_levels": {
                _level_key(lv): None if p is None else p.to_dict() for lv, p in self.at_levels.items()
            },
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FamilyResult:
        check_schema(data, "policy family")
        require(
            data, "policy family", "name", "label", "knob", "proposed", "timed", "points", "knee", "at_levels"
        )
        points = [Point.from_dict(p) for p in data["points"]]

        def same(p: Mapping[str, Any] | None) -> Point | None:  # the very point of `points`, when indexed
            if p is None:
                return None
            i = p.get("index")
            return points[i] if isinstance(i, int) and 0 <= i < len(points) else Point.from_dict(p)

        return cls(
            name=data["name"],
            label=data["label"],
            knob=data["knob"],
            proposed=data["proposed"],
            timed=data["timed"],
            points=points,
            knee=same(data["knee"]),
            at_levels={float(k): same(v) for k, v in data["at_levels"].items()},
        )


@dataclass
class RuntimeCheck:
    """The timed points run for real and compared with the simulation, image by image.

    Attributes:
        points: points checked.
        images_per_point: test images each was run on.
        mismatched_exits: images (summed over points) whose real exit differs from the simulated one.
        mismatched_predictions: the same for predictions.
    """

    points: int = 0
    images_per_point: int = 0
    mismatched_exits: int = 0
    mismatched_predictions: int = 0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeCheck:
        require(  # every field has a default, so name them
            data, "runtime check", "points", "images_per_point", "mismatched_exits", "mismatched_predictions"
        )
        return from_fields(cls, data, "runtime check")


@dataclass
class ComparisonTiming(TimingSummary):
    """`TimingSummary` of a comparison (every policy's points timed in the same rounds), with its
    runtime check and the proposed knee's speed against each baseline.

    Attributes:
        runtime_check: the timed points' real exits against the simulated ones.
        speed_contrasts: baseline -> how many times faster the proposed knee ran at batch 1 than
            the baseline's cheapest point reaching the knee's accuracy, with its paired interval
            (empty in comparisons written before policies shared their rounds).
    """

    runtime_check: RuntimeCheck = field(default_factory=RuntimeCheck)
    speed_contrasts: dict[str, SpeedInterval] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        contrasts = {k: v.to_dict() for k, v in self.speed_contrasts.items()}
        return {
            **super().to_dict(),
            "runtime_check": self.runtime_check.to_dict(),
            "speed_contrasts": contrasts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonTiming:
        base = cls._base_fields(data, "comparison timing")
        require(data, "comparison timing", "runtime_check")
        contrasts = {k: SpeedInterval.from_dict(v) for k, v in (data.get("speed_contrasts") or {}).items()}
        return cls(
            **base, runtime_check=RuntimeCheck.from_dict(data["runtime_check"]), speed_contrasts=contrasts
        )


@dataclass
class DecisionOverhead:
    """What one policy's batch-1 decision costs (the policy alone, not the exit layer).

    Attributes:
        policy: family name.
        us_per_decision: mean microseconds of one `stop_one` call.
        fraction_of_backbone_batch1: that, over the plain backbone's batch-1 time per image.
    """

    policy: str
    us_per_decision: float
    fraction_of_backbone_batch1: float
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionOverhead:
        return from_fields(cls, data, "decision overhead")


@dataclass
class Contrast:
    """The proposed rule against the best baseline at one matched compute, image by image.

    Accuracies a few hundredths of a point apart on the same test images are a tie more often
    than not; the paired interval over the test images says which they are.

    Attributes:
        level: the compute level (fraction of the backbone's MACs) both points stay within.
        knee: True for the proposed rule's knee (`level` is then the knee's own MACs).
        rival: the baseline family with the most accurate point within `level`.
        proposed_index, rival_index: the two points' positions in their families' `points`.
        interval: proposed minus rival in test accuracy, paired bootstrap over the test images.
    """

    level: float
    knee: bool
    rival: str
    proposed_index: int
    rival_index: int
    interval: Interval
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {**to_fields(self), "interval": self.interval.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contrast:
        check_schema(data, "contrast")
        require(data, "contrast", "level", "knee", "rival", "proposed_index", "rival_index", "interval")
        return cls(
            level=float(data["level"]),
            knee=bool(data["knee"]),
            rival=data["rival"],
            proposed_index=int(data["proposed_index"]),
            rival_index=int(data["rival_index"]),
            interval=Interval.from_dict(data["interval"]),
        )


@dataclass
class Comparison:
    """Every policy over its knob on one network and test set.

    Attributes:
        num_test, num_val: test images (evaluated) and validation images (knob grids).
        platform: where it ran.
        costs: per-part MACs and parameters.
        full_accuracy: the final exit's accuracy.
        oracle: the earliest correct exit for every sample.
        frontier: the oracle's (relative MACs, accuracy) frontier, cheapest first.
        families: one per policy; the proposed rule's is marked `proposed`.
        exit_confidence_medians: median max-softmax at each early exit on the calibration data.
        levels: the compute levels of `FamilyResult.at_levels`.
        max_drop: the knee's tolerance.
        timing: how the chosen points were timed (None: not timed).
        decision_overhead: per-decision cost of each timed policy.
        claims: the paper's claims checked against all of the above.
        source: where the numbers come from.
        contrasts: the proposed rule against the best baseline at each level and at the knee,
            with paired intervals (empty in files written before they existed).
    """

    num_test: int
    num_val: int
    platform: Platform
    costs: CostTable
    full_accuracy: float
    oracle: Point
    frontier: list[tuple[float, float]]
    families: list[FamilyResult]
    exit_confidence_medians: list[float] | None = None
    levels: tuple[float, ...] = LEVELS
    max_drop: float = MAX_DROP
    timing: ComparisonTiming | None = None
    decision_overhead: list[DecisionOverhead] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    source: str = SOURCE
    contrasts: list[Contrast] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def proposed(self) -> FamilyResult:
        """The proposed rule's family."""
        return next(f for f in self.families if f.proposed)

    def family(self, name: str) -> FamilyResult | None:
        """The family called `name`, if the comparison has it."""
        return next((f for f in self.families if f.name == name), None)

    def best_baseline(self, level: float, names: Sequence[str]) -> tuple[str, Point] | None:
        """Among the families `names`, the most accurate point within `level` of the MACs, and its family.

        `level` is one of `levels` or any other share (the knee's MACs, for instance).
        """
        found = [
            (f.name, p)
            for n in names
            if (f := self.family(n))
            and (p := f.at_levels[level] if level in f.at_levels else at_compute(f.points, level)) is not None
        ]
        return max(found, key=lambda r: r[1].accuracy) if found else None

    def contrast(self, level: float, *, knee: bool = False) -> Contrast | None:
        """The stored contrast at `level` (or at the knee), None when there is none."""
        return next(
            (c for c in self.contrasts if c.knee == knee and (knee or math.isclose(c.level, level))), None
        )

    def to_dict(self) -> dict[str, Any]:
        """`policies.json`."""
        out: dict[str, Any] = {
            "source": self.source,
            "num_test": self.num_test,
            "num_val": self.num_val,
            "platform": self.platform.to_dict(),
            "costs": self.costs.to_dict(),
            "full_accuracy": self.full_accuracy,
            "levels": list(self.levels),
            "max_drop": self.max_drop,
            "oracle": {**self.oracle.to_dict(), "frontier": [list(mf) for mf in self.frontier]},
            "families": [f.to_dict() for f in self.families],
            "exit_confidence_medians": self.exit_confidence_medians,
        }
        if self.timing is not None:
            out["timing"] = self.timing.to_dict()
            out["decision_overhead"] = [d.to_dict() for d in self.decision_overhead]
        out["claims"] = [c.to_dict() for c in self.claims]
        out["contrasts"] = [c.to_dict() for c in self.contrasts]
        out["schema_version"] = self.schema_version
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        check_schema(data, "policy comparison (policies.json)", _RERUN)
        require(
            data, "policy comparison", "num_test", "num_val", "platform", "costs", "full_accuracy", "oracle"
        )
        require(data, "policy comparison", "families", "levels", "max_drop", "claims")
        require(data["oracle"], "oracle", "frontier")
        timing = data.get("timing")
        return cls(
            num_test=data["num_test"],
            num_val=data["num_val"],
            platform=Platform.from_dict(data["platform"]),
            costs=CostTable.from_dict(data["costs"]),
            full_accuracy=data["full_accuracy"],
            oracle=Point.from_dict({k: v for k, v in data["oracle"].items() if k != "frontier"}),
            frontier=[(float(m), float(a)) for m, a in data["oracle"]["frontier"]],
            families=[FamilyResult.from_dict(f) for f in data["families"]],
            exit_confidence_medians=data.get("exit_confidence_medians"),
            levels=tuple(float(lv) for lv in data["levels"]),
            max_drop=data["max_drop"],
            timing=None if timing is None else ComparisonTiming.from_dict(timing),
            decision_overhead=[DecisionOverhead.from_dict(d) for d in data.get("decision_overhead", [])],
            claims=[Claim.from_dict(c) for c in data["claims"]],
            source=data.get("source", SOURCE),
            contrasts=[Contrast.from_dict(c) for c in data.get("contrasts", [])],
        )


CSV_FIELDS = (
    "policy",
    "knob",
    "value",
    "accuracy",
    "mean_macs",
    "relative_macs",
    "exit_fractions",
    "balance",
    "compute_speedup",
    "batch1_mean_ms",
    "batch1_p95_ms",
    "batch1_speedup",
    "batch1_efficiency",
    "batched_images_per_s",
    "batched_speedup",
    "batched_efficiency",
    "source",
)


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One flat row per (policy, knob value), for the CSV file (empty timing cells: simulated only)."""
    rows = []
    for fam in comparison.families:
        for p in fam.points:
            t = p.timing
            rows.append(
                {
                    "policy": fam.name,
                    "knob": fam.knob,
                    "value": p.value,
                    "accuracy": p.accuracy,
                    "mean_macs": p.mean_macs,
                    "relative_macs": p.relative_macs,
                    "exit_fractions": " ".join(f"{f:.4f}" for f in p.exit_fractions),
                    "balance": p.balance,
                    "compute_speedup": p.compute_speedup,
                    "batch1_mean_ms": "" if t is None else t.batch1_mean_ms,
                    "batch1_p95_ms": "" if t is None else t.batch1_p95_ms,
                    "batch1_speedup": "" if t is None else t.batch1_speedup,
                    "batch1_efficiency": "" if t is None else p.batch1_efficiency,
                    "batched_images_per_s": "" if t is None else t.batched_images_per_s,
                    "batched_speedup": "" if t is None else t.batched_speedup,
                    "batched_efficiency": "" if t is None else p.batched_efficiency,
                    "source": "simulated" if t is None else "simulated + real runtime (timed, exits checked)",
                }
            )
    return rows


def save_comparison(comparison: Comparison, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `policies.json` and `policies.csv` into `out_dir` as one set (`bofexits._outputs.output_set`);
    `bofexits.reporting.write_results` writes them together with the report."""
    from bofexits._outputs import output_set

    with output_set(out_dir, "compare") as stage:
        write_comparison_files(comparison, stage)
    return Path(out_dir) / "policies.json", Path(out_dir) / "policies.csv"


def write_comparison_files(comparison: Comparison, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `policies.json` and `policies.csv` into `out_dir` (each atomically)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "policies.json", comparison.to_dict())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(comparison_rows(comparison))
    write_text(out_dir / "policies.csv", buf.getvalue())
    return out_dir / "policies.json", out_dir / "policies.csv"
