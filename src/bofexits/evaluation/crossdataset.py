"""The cross-dataset benchmark's results: one typed row per (dataset, exit head), and `results.json`.

`benchmarks/run_all.py` trains and compares one run per dataset and exit head, and fills a
`BenchmarkResults` from each run's `Comparison` (`summary_row`); `run_all.py --render-only`
reads one back (`BenchmarkResults.from_dict`) and renders it again without training or timing
anything. Like every evaluation result, each type writes `schema_version` and refuses another.
The tables and plots that read these results stay beside the benchmark (`benchmarks/crossdataset.py`).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from bofexits.devices import describe_device, resolve_device
from bofexits.evaluation.comparison import BASELINES, Comparison, RuntimeCheck
from bofexits.evaluation.points import LEVELS, Point
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields
from bofexits.evaluation.speedup import MAX_EFFICIENCY
from bofexits.evaluation.timing import cpu_model

__all__ = [
    "HEAD_COST_LIMIT",
    "BenchmarkResults",
    "LevelRow",
    "Machine",
    "RowPoint",
    "RunInfo",
    "Settings",
    "Skipped",
    "SummaryRow",
    "Wall",
    "summary_row",
]

HEAD_COST_LIMIT = 0.05
"""Exit heads must cost at most this share of the backbone's MACs (a target of this benchmark)."""
THROUGHPUT_BATCH = 256
POINTS = 101


# --- one summary row per run ----------------------------------------------------------------------


@dataclass
class RowPoint:
    """A policy point as the cross-dataset table needs it (speedups when it was timed)."""

    accuracy: float
    relative_macs: float
    balance: float
    knob: str
    value: float
    batch1_speedup: float | None = None
    batched_speedup: float | None = None

    @classmethod
    def of(cls, p: Point | None) -> RowPoint | None:
        if p is None:
            return None
        t = p.timing
        return cls(
            p.accuracy,
            p.relative_macs,
            p.balance,
            p.knob or "",
            float(p.value) if p.value is not None else math.nan,
            t.batch1_speedup if t else None,
            t.batched_speedup if t else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accuracy": self.accuracy, "relative_macs": self.relative_macs}
        out["balance"] = self.balance
        out.update({"knob": self.knob, self.knob: self.value})
        if self.batch1_speedup is not None:
            out.update(batch1_speedup=self.batch1_speedup, batched_speedup=self.batched_speedup)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RowPoint | None:
        if d is None:
            return None
        require(d, "benchmark point", "accuracy", "relative_macs", "balance", "knob", d.get("knob", "knob"))
        return cls(
            d["accuracy"],
            d["relative_macs"],
            d["balance"],
            d["knob"],
            d[d["knob"]],
            d.get("batch1_speedup"),
            d.get("batched_speedup"),
        )


@dataclass
class LevelRow:
    """At one compute level: the proposed rule's best point against the best baseline's."""

    proposed: RowPoint | None
    baseline: str | None
    best_baseline: RowPoint | None

    @property
    def difference(self) -> float | None:
        """Proposed minus best baseline accuracy (a fraction), when both reach the level."""
        if self.proposed is None or self.best_baseline is None:
            return None
        return self.proposed.accuracy - self.best_baseline.accuracy

    def to_dict(self) -> dict[str, Any]:
        best = self.best_baseline
        return {
            "proposed": None if self.proposed is None else self.proposed.to_dict(),
            "best_baseline": None if best is None else {"policy": self.baseline, **best.to_dict()},
            "difference_pp": None if self.difference is None else 100 * self.difference,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LevelRow:
        require(d, "benchmark level", "proposed", "best_baseline")
        best = d["best_baseline"]
        return cls(RowPoint.from_dict(d["proposed"]), best and best["policy"], RowPoint.from_dict(best))


@dataclass
class Wall:
    """Wall times of one run: training in this invocation, as recorded, and the comparison."""

    train_s: float
    reused: bool
    resumed: bool
    train_s_recorded: float = 0.0
    compare_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Wall:
        return from_fields(cls, d, "benchmark wall times")


@dataclass
class RunInfo:
    """How one run was trained: the schedule a row of the table reports."""

    backbone: str
    mode: str
    backbone_epochs: int
    exit_epochs: int
    config: dict[str, Any]
    run_dir: str  # relative to --out
    wall: Wall


@dataclass
class SummaryRow:
    """The numbers a cross-dataset table needs from one run's policy comparison."""

    dataset: str
    head: str
    run: RunInfo
    num_test: int
    num_val: int
    final_accuracy: float
    exit_accuracies: list[float]
    exit_heads_macs: float
    exit_heads_params: float
    backbone_macs: int
    rule: str
    knee: RowPoint | None
    at_levels: dict[float, LevelRow]
    claims: dict[str, str]
    runtime_check: RuntimeCheck | None
    curves: dict[str, list[list[float]]]

    def to_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "dataset": self.dataset,
            "head": self.head,
            "backbone": run.backbone,
            "mode": run.mode,
            "backbone_epochs": run.backbone_epochs,
            "exit_epochs": run.exit_epochs,
            "config": run.config,
            "run_dir": run.run_dir,
            "wall": run.wall.to_dict(),
            "num_test": self.num_test,
            "num_val": self.num_val,
            "final_accuracy": self.final_accuracy,
            "exit_accuracies": self.exit_accuracies,
            "exit_heads_macs_pct": 100 * self.exit_heads_macs,
            "exit_heads_params_pct": 100 * self.exit_heads_params,
            "exit_heads_within_5pct_macs": self.exit_heads_macs <= HEAD_COST_LIMIT,
            "backbone_macs": self.backbone_macs,
            "rule": self.rule,
            "knee": None if self.knee is None else self.knee.to_dict(),
            "at_levels": {f"{lv:g}": row.to_dict() for lv, row in self.at_levels.items()},
            "claims": self.claims,
            "runtime_check": None if self.runtime_check is None else self.runtime_check.to_dict(),
            "curves": self.curves,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SummaryRow:
        names = ("dataset", "head", "backbone", "mode", "backbone_epochs", "exit_epochs", "config", "run_dir")
        require(
            d, "benchmark row", *names, "wall", "num_test", "num_val", "final_accuracy", "exit_accuracies"
        )
        require(d, "benchmark row", "exit_heads_macs_pct", "exit_heads_params_pct", "backbone_macs", "rule")
        require(d, "benchmark row", "knee", "at_levels", "claims", "runtime_check", "curves")
        run = RunInfo(**{n: d[n] for n in names[2:]}, wall=Wall.from_dict(d["wall"]))
        check = d["runtime_check"]
        return cls(
            d["dataset"],
            d["head"],
            run,
            d["num_test"],
            d["num_val"],
            d["final_accuracy"],
            list(d["exit_accuracies"]),
            d["exit_heads_macs_pct"] / 100,
            d["exit_heads_params_pct"] / 100,
            d["backbone_macs"],
            d["rule"],
            RowPoint.from_dict(d["knee"]),
            {float(k): LevelRow.from_dict(v) for k, v in d["at_levels"].items()},
            dict(d["claims"]),
            None if check is None else RuntimeCheck.from_dict(check),
            {k: [list(mf) for mf in v] for k, v in d["curves"].items()},
        )


def _level_row(comparison: Comparison, level: float) -> LevelRow:
    name, best = comparison.best_baseline(level, BASELINES) or (None, None)
    return LevelRow(RowPoint.of(comparison.proposed.at_levels[level]), name, RowPoint.of(best))


def summary_row(dataset: str, head: str, comparison: Comparison, run: RunInfo) -> SummaryRow:
    """The numbers a cross-dataset table needs from one run's `compare_policies` result."""
    prop, costs = comparison.proposed, comparison.costs
    single = comparison.family("single-exit")
    singles = sorted(single.points, key=lambda p: p.value or 0.0) if single else []
    soft = comparison.family("max-softmax")

    def curve(points: list[Point]) -> list[list[float]]:
        return [[round(p.relative_macs, 6), round(p.accuracy, 6)] for p in points]

    return SummaryRow(
        dataset=dataset,
        head=head,
        run=run,
        num_test=comparison.num_test,
        num_val=comparison.num_val,
        final_accuracy=comparison.full_accuracy,
        exit_accuracies=[p.accuracy for p in singles[:-1]],
        exit_heads_macs=costs.exit_macs_fraction,
        exit_heads_params=costs.exit_params_fraction,
        backbone_macs=costs.backbone_macs,
        rule=prop.label,
        knee=RowPoint.of(prop.knee),
        at_levels={lv: _level_row(comparison, lv) for lv in LEVELS},
        claims={c.claim: c.verdict for c in comparison.claims},
        runtime_check=None if comparison.timing is None else comparison.timing.runtime_check,
        curves={"proposed": curve(prop.points), "max-softmax": curve(soft.points if soft else [])},
    )


@dataclass
class Skipped:
    """A dataset that was not run, and how to get its files."""

    dataset: str
    reason: str


@dataclass
class Machine:
    """Where the benchmark ran; `training_device` is where it trained and timed (`--device`)."""

    cpu_model: str
    machine: str
    logical_cpus: int | None
    threads: int
    torch: str
    python: str
    training_device: str

    @classmethod
    def here(cls, device: str = "auto") -> Machine:
        return cls(
            cpu_model(),
            platform.machine(),
            os.cpu_count(),
            torch.get_num_threads(),
            torch.__version__,
            platform.python_version(),
            describe_device(resolve_device(device)),
        )


@dataclass
class Settings:
    """How every policy comparison of the benchmark was run."""

    timing_samples: int
    timed_points: int
    timing_rounds: int
    throughput_batches: int
    throughput_batch: int = THROUGHPUT_BATCH
    points: int = POINTS
    max_efficiency: float = MAX_EFFICIENCY

    def compare_kwargs(self) -> dict[str, float]:
        """The keyword arguments of `compare_policies`."""
        return to_fields(self)


@dataclass
class BenchmarkResults:
    """`results.json` of the benchmark: provenance, one row per (dataset, head), what was skipped."""

    command: str
    date: str
    quick: bool
    comparison: Settings
    platform: Machine
    schedule: dict[str, Any] = field(default_factory=dict)  # per dataset; each row also holds its config
    training_batch_size: int | None = None
    rows: list[SummaryRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    wall_s: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "date": self.date,
            "quick": self.quick,
            "schedule": self.schedule,
            "comparison": to_fields(self.comparison),
            "batch_sizes": {
                "batch1": 1,
                "batched": self.comparison.throughput_batch,
                "training": self.training_batch_size,
            },
            "platform": to_fields(self.platform),
            "rows": [r.to_dict() for r in self.rows],
            "skipped": [to_fields(s) for s in self.skipped],
            "wall_s": self.wall_s,
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchmarkResults:
        check_schema(d, "cross-dataset benchmark (results.json)", "run benchmarks/run_all.py again")
        names = ("command", "date", "quick", "schedule", "comparison", "batch_sizes", "platform", "rows")
        require(d, "cross-dataset benchmark", *names, "skipped", "wall_s")
        return cls(
            d["command"],
            d["date"],
            d["quick"],
            from_fields(Settings, d["comparison"], "benchmark settings"),
            from_fields(Machine, d["platform"], "benchmark machine"),
            d["schedule"],
            d["batch_sizes"]["training"],
            [SummaryRow.from_dict(r) for r in d["rows"]],
            [from_fields(Skipped, s, "skipped dataset") for s in d["skipped"]],
            d["wall_s"],
        )


# --- rendering ------------------------------------------------------------------------------------
