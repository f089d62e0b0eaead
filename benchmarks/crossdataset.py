"""The cross-dataset benchmark's results and how they read: one typed row per (dataset, exit head),
`results.json`, the README table, `results.md` and the per-dataset plot.

`benchmarks/run_all.py` fills a `BenchmarkResults`; `run_all.py --render-only` reads one back
(`BenchmarkResults.from_dict`) and renders it again without training or timing anything.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bofexits._io import atomic_path  # noqa: E402
from bofexits.devices import describe_device, resolve_device  # noqa: E402
from bofexits.evaluation.claims import BASELINES  # noqa: E402
from bofexits.evaluation.comparison import Comparison, RuntimeCheck  # noqa: E402
from bofexits.evaluation.points import LEVELS, MAX_DROP, Point  # noqa: E402
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields  # noqa: E402
from bofexits.evaluation.speedup import MAX_EFFICIENCY  # noqa: E402
from bofexits.evaluation.timing import cpu_model  # noqa: E402
from bofexits.reporting.format import met, pct, pct_value, pp, times  # noqa: E402
from bofexits.reporting.tables import markdown_table  # noqa: E402

__all__ = [
    "BEGIN",
    "END",
    "HEAD_COST_LIMIT",
    "BenchmarkResults",
    "Machine",
    "RunInfo",
    "Settings",
    "Skipped",
    "SummaryRow",
    "Wall",
    "plot_heads",
    "render_markdown",
    "render_readme_block",
    "render_table",
    "replace_block",
    "summary_row",
]

BEGIN, END = "<!-- crossdataset:begin -->", "<!-- crossdataset:end -->"
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
        out = {"accuracy": self.accuracy, "relative_macs": self.relative_macs, "balance": self.balance}
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
        run = RunInfo(*(d[n] for n in names[2:]), wall=Wall.from_dict(d["wall"]))
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


def _level_cell(level: LevelRow) -> str:
    mine, best = level.proposed, level.best_baseline
    if mine is None:
        return "unreachable"
    if best is None or level.difference is None:
        return f"{pct_value(mine.accuracy)} vs none"
    return f"{pct_value(mine.accuracy)} vs {pct_value(best.accuracy)} {level.baseline} ({100 * level.difference:+.2f})"


def _knee_cells(knee: RowPoint | None) -> list[str]:
    if knee is None:
        return ["none", "-"]
    cell = f"{pct_value(knee.accuracy)} @ {pct(knee.relative_macs, 1)} (beta {knee.value:.3g}, bal {knee.balance:.2f})"
    if knee.batch1_speedup is None or knee.batched_speedup is None:
        return [cell, "-"]
    return [cell, f"{times(knee.batch1_speedup)} / {times(knee.batched_speedup)}"]


def _row_cells(r: SummaryRow, levels: list[float]) -> list[str]:
    return [
        r.head,
        pct_value(r.final_accuracy),
        " / ".join(pct_value(a) for a in r.exit_accuracies),
        f"{pct_value(r.exit_heads_macs)} / {pct_value(r.exit_heads_params)}",
        met(r.exit_heads_macs <= HEAD_COST_LIMIT),
        *_knee_cells(r.knee),
        *[_level_cell(r.at_levels[lv]) for lv in levels],
        " / ".join(r.claims.get(k, "-") for k in ("a", "b", "c")),
    ]


def _table_note() -> str:
    return (
        "Accuracy on the test set, %. The backbone is trained once per dataset (two-phase, `bof` run); the "
        "`pooled` (SDN) and `conv` (BranchyNet-style) heads are trained on it frozen. Knee: the cheapest point "
        f"of the proposed rule within {pp(MAX_DROP, 1, signed=False)} of the full network; speedups against the "
        "plain backbone timed interleaved in the same run. `<= X MACs`: the most accurate point using at most "
        f"that share of the backbone's MACs, proposed rule vs the best of {', '.join(BASELINES)} (difference in "
        "pp). Claims: the paper's (a) balance, (b) one knob, (c) accuracy and time vs existing rules, as checked "
        "in each run's report.md."
    )


def render_table(results: BenchmarkResults) -> str:
    """Markdown: one table per dataset (a row per exit head), then what the columns mean.

    Reused by README generators; reads only `results.rows` (and `results.quick`).
    """
    rows = results.rows
    if not rows:
        return "No dataset was run (none of the requested datasets is on this machine)."
    levels = list(rows[0].at_levels)
    header = [
        "exit head",
        "full net %",
        "exits alone %",
        "heads: % of backbone MACs / params",
        f"heads <= {pct(HEAD_COST_LIMIT, 0)} MACs",
        "knee: acc % @ MACs",
        "knee speedup b1 / batched",
        *[f"<= {lv:.0%} MACs: proposed vs best baseline" for lv in levels],
        "claims a / b / c",
    ]
    out: list[str] = []
    for ds in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == ds]
        first = mine[0]
        quick = ", quick schedule" if results.quick else ""
        out += [
            f"**{ds}** (`{first.run.backbone}`, {first.num_test} test images; epochs: backbone "
            f"{first.run.backbone_epochs}, exits {first.run.exit_epochs}{quick})",
            "",
            markdown_table(header, [_row_cells(r, levels) for r in mine]),
            "",
        ]
    return "\n".join([*out, _table_note()])


def _provenance(results: BenchmarkResults) -> str:
    plat, comp = results.platform, results.comparison
    sched = "quick schedule" if results.quick else "full recipe schedule"
    timing = (
        f"batch-1 timing over {comp.timing_samples} test images, batched at {comp.throughput_batch}"
        if comp.timing_samples > 0
        else "not timed"
    )
    where = f"GPU {plat.training_device}" if plat.training_device not in ("cpu", "") else plat.cpu_model
    return (
        f"Produced by `{results.command}` on {results.date[:10]}: {where}, "
        f"{plat.threads} torch threads, torch {plat.torch} ({sched}; {timing})."
    )


def render_readme_block(results: BenchmarkResults) -> str:
    """The README block: where the numbers come from, the tables, and which datasets were absent."""
    parts = [_provenance(results), "", render_table(results)]
    if results.skipped:
        names = ", ".join(s.dataset for s in results.skipped)
        parts += ["", f"Not run (files not on that machine): {names}; `results.md` says how to get them."]
    return "\n".join(parts)


def _wall_table(results: BenchmarkResults) -> str:
    rows = []
    for r in results.rows:
        w = r.run.wall
        reused = " (reused)" if w.reused else ""
        rows.append(
            [
                f"{r.dataset} / {r.head}",
                f"{w.train_s:.0f}{reused}",
                f"{w.train_s_recorded:.0f}",
                f"{w.compare_s:.0f}",
            ]
        )
    header = ["run", "training s (this invocation)", "training s (recorded)", "comparison s"]
    return markdown_table(header, rows)


def _skipped_section(results: BenchmarkResults) -> list[str]:
    if not results.skipped:
        return []
    return [
        "## Datasets not run: how to get them",
        "",
        "Nothing is downloaded by this script. Put each dataset's files in DIR/<name>/ and pass "
        "`--data-dir DIR`, or use the places each message names, then run the same command again "
        "(finished runs are reused).",
        "",
        *[f"- **{s.dataset}**: {s.reason}" for s in results.skipped],
        "",
    ]


def render_markdown(results: BenchmarkResults) -> str:
    """results.md: provenance, the tables, plots, per-run reports, missing datasets, wall times."""
    out = ["# Cross-dataset benchmark", "", _provenance(results), "", render_table(results), ""]
    datasets = list(dict.fromkeys(r.dataset for r in results.rows))
    if datasets:
        out += ["## Accuracy against compute per exit head", ""]
        out += [f"![{ds}]({ds}_heads.png)" for ds in datasets]
        out += ["", "## Per-run reports", ""]
        out += [
            f"- {r.dataset} / {r.head}: [{r.run.run_dir}/report.md]({r.run.run_dir}/report.md)"
            for r in results.rows
        ]
        out += ["", "## Wall time", "", _wall_table(results), ""]
    out += _skipped_section(results)
    out += [f"Total wall time: {results.wall_s:.0f} s.", ""]
    return "\n".join(out)


def plot_heads(results: BenchmarkResults, dataset: str, path: Path) -> Path:
    """Accuracy vs relative MACs of the proposed rule per head (solid), each head's max-softmax dashed."""
    rows = [r for r in results.rows if r.dataset == dataset]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    accs: list[float] = []
    for i, r in enumerate(rows):
        color = f"C{i}"
        for name, style in (("proposed", "-"), ("max-softmax", "--")):
            pts = r.curves[name]
            accs += [100 * a for _, a in pts]
            label = f"{r.head}: {'proposed rule' if name == 'proposed' else 'max-softmax'}"
            ax.plot(
                [100 * m for m, _ in pts], [100 * a for _, a in pts], style, color=color, lw=1.3, label=label
            )
        if r.knee is not None:
            ax.plot([100 * r.knee.relative_macs], [100 * r.knee.accuracy], "o", color=color, ms=5)
    top = max(100 * r.final_accuracy for r in rows)
    ax.axhline(top, color="grey", lw=0.8, ls=":", label="full network")
    if accs:
        ax.set_ylim(max(min(accs), top - 10) - 0.5, max(max(accs), top) + 0.5)
    ax.set_xlabel("mean MACs per sample (% of the plain backbone)")
    ax.set_ylabel("top-1 test accuracy (%)")
    ax.set_title(f"{dataset}: exit heads on one backbone (dots: knees)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def replace_block(text: str, block: str, source: str = "the file") -> str:
    """`text` with everything between the crossdataset markers replaced by `block` (markers kept).

    >>> replace_block("a\\n<!-- crossdataset:begin -->\\nold\\n<!-- crossdataset:end -->\\nb", "new")
    'a\\n<!-- crossdataset:begin -->\\nnew\\n<!-- crossdataset:end -->\\nb'
    """
    begin, end = text.find(BEGIN), text.find(END)
    if text.count(BEGIN) != 1 or text.count(END) != 1 or end < begin:
        raise SystemExit(
            f"{source} needs exactly one `{BEGIN}` line followed by one `{END}` line where the cross-dataset "
            "table goes; add them (this script does not add them itself) and run again"
        )
    return text[: begin + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:]
