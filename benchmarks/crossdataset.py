"""How the cross-dataset benchmark's results read: the README table, `results.md` and the
per-dataset plot.

The results themselves (one typed row per dataset and exit head, `results.json`) are
`bofexits.evaluation.crossdataset`; `benchmarks/run_all.py` fills them and renders them here,
and `run_all.py --render-only` renders a saved `results.json` again without training or timing.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bofexits._io import atomic_path  # noqa: E402
from bofexits.evaluation.comparison import BASELINES  # noqa: E402
from bofexits.evaluation.crossdataset import (  # noqa: E402
    HEAD_COST_LIMIT,
    BenchmarkResults,
    LevelRow,
    RowPoint,
    SummaryRow,
)
from bofexits.evaluation.points import MAX_DROP  # noqa: E402
from bofexits.reporting.format import met, pct, pct_value, pp, times  # noqa: E402
from bofexits.reporting.tables import markdown_table  # noqa: E402

__all__ = [
    "BEGIN",
    "END",
    "plot_heads",
    "render_markdown",
    "render_readme_block",
    "render_table",
    "replace_block",
]

BEGIN, END = "<!-- crossdataset:begin -->", "<!-- crossdataset:end -->"


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
