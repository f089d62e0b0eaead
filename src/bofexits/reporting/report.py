"""Render `report.md`, a self-contained `report.html` and the plots from a run folder's results."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from bofexits._io import write_text
from bofexits.errors import ConfigError
from bofexits.evaluation.sweep import knee_point
from bofexits.reporting.plots import (
    plot_accuracy_at_levels,
    plot_accuracy_vs_compute,
    plot_exit_distribution,
    plot_matched_distributions,
    plot_policies,
)

__all__ = ["check_targets", "render_comparison", "render_html", "render_markdown", "write_report"]

# Issue targets the demo is held to (see README "Results").
TARGET_FINAL_ACC = 0.925
TARGET_MAX_DROP = 0.005
TARGET_MAX_MACS = 0.60
TARGET_SPEEDUP = 1.5
TARGET_EXIT_COST = 0.05


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (no target is hidden)."""
    costs = results["costs"]
    full = results["full_accuracy"]
    knee = knee_point(results["points"], full, TARGET_MAX_DROP)
    timing = {t["beta"]: t for t in results.get("timing", {}).get("per_beta", [])}
    exit_macs = sum(costs["exit_macs"]) / costs["backbone_macs"]
    exit_params = costs["exit_params"] / costs["backbone_params"]
    rows = [
        {
            "target": "final exit test accuracy >= 92.5%",
            "measured": f"{100 * full:.2f}%",
            "met": full >= TARGET_FINAL_ACC,
        },
        {
            "target": "BoF exits <= 5% of backbone MACs and parameters",
            "measured": f"{100 * exit_macs:.2f}% MACs, {100 * exit_params:.2f}% params",
            "met": exit_macs <= TARGET_EXIT_COST and exit_params <= TARGET_EXIT_COST,
        },
    ]
    if knee is None:
        rows.append({"target": "a beta within 0.5 pp of the final exit", "measured": "none", "met": False})
        return rows
    t = timing.get(knee["beta"], {})
    rows += [
        {
            "target": "knee (cheapest beta within 0.5 pp of final) uses <= 60% of MACs",
            "measured": f"beta={knee['beta']:g}: {100 * knee['accuracy']:.2f}% at {100 * knee['relative_macs']:.1f}%",
            "met": knee["relative_macs"] <= TARGET_MAX_MACS,
        },
        {
            "target": "knee batch-1 wall-clock speedup >= 1.5x vs plain backbone",
            "measured": f"{t.get('batch1_speedup', float('nan')):.2f}x",
            "met": t.get("batch1_speedup", 0) >= TARGET_SPEEDUP,
        },
    ]
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(results: dict[str, Any]) -> str:
    """The report text: setup, costs, the knob sweep, timing, comparisons and target checks."""
    costs, plat = results["costs"], results["platform"]
    timing = results.get("timing", {})
    per_t = {t["beta"]: t for t in timing.get("per_beta", [])}
    train = results.get("training", {})
    out = [f"# bofexits report: {results.get('dataset', 'dataset')}", ""]
    if train:
        out += [
            f"Backbone `{train['backbone']}`, {train['epochs']} epochs ({train['mode']} training, "
            f"{train['seconds'] / 60:.1f} min), calibration on the {train['calibration_split']} split. "
            f"Test set: {results['num_test']} images, never used for calibration.",
            "",
        ]
    out += [
        f"Machine: {plat['processor']}, torch {plat['torch']}, {timing.get('threads', plat['threads'])} "
        f"threads. Speedups are ratios to the plain backbone (`nn.Sequential` of the stages) timed "
        f"interleaved in the same run; batch 1 over {timing.get('batch1_samples', 0)} test images, "
        f"batched over {timing.get('batched_samples', 0)} images in batches of "
        f"{timing.get('batched_size', 0)}.",
        "",
        "## Targets",
        "",
    ]
    out.append(
        _table(
            ["target", "measured", "met"],
            [[r["target"], r["measured"], "yes" if r["met"] else "**no**"] for r in check_targets(results)],
        )
    )
    out += ["", "## Exits", ""]
    bb = costs["backbone_macs"]
    rows = []
    for i, acc in enumerate(results["per_exit_accuracy"]):
        em = costs["exit_macs"][i] if i < len(costs["exit_macs"]) else 0
        rows.append(
            [
                str(i + 1),
                f"{100 * acc:.2f}",
                f"{100 * costs['macs_at_exit'][i] / bb:.1f}",
                f"{100 * em / bb:.2f}" if i < len(costs["exit_macs"]) else "(backbone head)",
            ]
        )
    out.append(_table(["exit", "accuracy % (alone)", "MACs % when leaving here", "exit head MACs %"], rows))
    o = results["oracle"]
    out += [
        "",
        f"Backbone: {bb / 1e6:.2f} M MACs, {costs['backbone_params'] / 1e3:.1f} k parameters; all exit heads "
        f"{sum(costs['exit_macs']) / 1e6:.3f} M MACs, {costs['exit_params'] / 1e3:.1f} k parameters. "
        f"Oracle (earliest correct exit): {100 * o['accuracy']:.2f}% at {100 * o['relative_macs']:.1f}% MACs.",
        "",
        f"## The knob: {results['variant']} rule on {results['score']} (real early exit)",
        "",
    ]
    rows = []
    for p in results["points"]:
        t = per_t.get(p["beta"], {})
        rows.append(
            [
                f"{p['beta']:g}",
                f"{100 * p['accuracy']:.2f}",
                f"{100 * p['relative_macs']:.1f}",
                " / ".join(f"{f:.2f}" for f in p["exit_fractions"]),
                f"{p['balance']:.3f}",
                f"{t.get('batch1_ms', float('nan')):.3f}",
                f"{t.get('batch1_speedup', float('nan')):.2f}x",
                f"{t.get('batched_speedup', float('nan')):.2f}x",
            ]
        )
    out.append(
        _table(
            [
                "beta",
                "acc %",
                "MACs %",
                "exit fractions",
                "balance",
                "batch-1 ms",
                "batch-1 speedup",
                f"batch-{timing.get('batched_size', 0)} speedup",
            ],
            rows,
        )
    )
    if timing:
        out += [
            "",
            f"Plain backbone: {timing['backbone_batch1_ms']:.3f} ms per image at batch 1, "
            f"{timing['backbone_batched_ms']:.4f} ms per image batched. Batch-1 and batched paths agree "
            f"on every timed image: {'yes' if timing['batch1_paths_agree'] else '**no**'}.",
        ]
    if results.get("comparisons"):
        agrees = "yes" if results.get("simulation_matches_runtime") else "**no**"
        out += [
            "",
            "## Other scores and variants (accuracy % / MACs %)",
            "",
            f"Simulated from all exits' outputs (computed once); the simulation reproduces the real "
            f"runtime's exit for every test sample at the headline points: {agrees}.",
            "",
        ]
        for name, pts in results["comparisons"].items():
            cells = ", ".join(
                f"{p['beta']:g}: {100 * p['accuracy']:.2f}/{100 * p['relative_macs']:.0f}" for p in pts
            )
            out.append(f"- `{name}`: {cells}")
    out += [
        "",
        "![accuracy vs compute](accuracy_vs_compute.png)",
        "",
        "![exit distribution](exit_distribution.png)",
        "",
    ]
    return "\n".join(out)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _point_cell(p: dict[str, Any] | None, knob: str) -> str:
    if p is None:
        return "n/a"
    return f"{_pct(p['accuracy'])} @ {100 * p['relative_macs']:.1f}% ({knob}={p[knob]:.4g}, bal {p['balance']:.2f})"


def render_comparison(comparison: dict[str, Any]) -> str:
    """Markdown for the policy comparison: the paper's claims checked, then the numbers behind them."""
    timing = comparison.get("timing", {})
    check = timing.get("runtime_check", {})
    out = [
        "## Policies side by side",
        "",
        f"Every policy over its knob's range on {comparison['num_test']} test images "
        f"({comparison['source']}). Knob grids and the budgeted thresholds come from the "
        f"{comparison['num_val']}-image validation split, never the test set. Full network: "
        f"{_pct(comparison['full_accuracy'])}%; oracle (earliest correct exit): "
        f"{_pct(comparison['oracle']['accuracy'])}% at {100 * comparison['oracle']['relative_macs']:.1f}% MACs.",
        "",
    ]
    if check:
        out += [
            f"Real-runtime check: {check['points']} timed points, each run for real on {check['images_per_point']} "
            f"test images: {check['mismatched_exits']} exits and {check['mismatched_predictions']} predictions "
            "differ from the simulation.",
            "",
        ]
    out += ["### The paper's claims on this run", ""]
    for c in comparison.get("claims", []):
        out += [f"**({c['claim']}) {c['statement']}: {c['verdict']}.**", ""]
        out.append(
            _table(
                ["check", "measured", "met"],
                [
                    [k["check"], k["measured"], {True: "yes", False: "**no**", None: "n/a"}[k["met"]]]
                    for k in c["checks"]
                ],
            )
        )
        out += [""]
        if c["why"]:
            out += [f"Why: {c['why']}", ""]
    levels = [f"{lv:g}" for lv in comparison["levels"]]
    rows = []
    for fam in comparison["families"]:
        knee = fam["knee"]
        t = (knee or {}).get("timing", {})
        rows.append(
            [
                ("**" + fam["label"] + "**") if fam["proposed"] else fam["label"],
                _point_cell(knee, fam["knob"]),
                f"{t['batch1_speedup']:.2f}x / {t['batched_speedup']:.2f}x" if t else "-",
                *[_point_cell(fam["at_levels"][lv], fam["knob"]) for lv in levels],
            ]
        )
    out += [
        "### Knee and matched compute",
        "",
        "Knee: the cheapest point within 0.5 pp of the full network. Matched compute: the most accurate point "
        "using at most that share of the backbone's MACs. Cells: accuracy % @ MACs %. Speedups are measured "
        f"against the plain backbone timed in the same rounds (batch 1 over {timing.get('batch1_samples', 0)} "
        f"images / batch {timing.get('batched_size', 0)}, {timing.get('threads', '?')} threads); dotted "
        "policies are simulated only.",
        "",
        _table(
            ["policy", "knee", "knee speedup b1 / batched", *[f"<= {float(lv):.0%} MACs" for lv in levels]],
            rows,
        ),
        "",
    ]
    if comparison.get("decision_overhead"):
        out += [
            "### Decision overhead (policy only, batch 1, at the knee)",
            "",
            _table(
                ["policy", "µs per exit decision", "% of the backbone's batch-1 time"],
                [
                    [
                        r["policy"],
                        f"{r['us_per_decision']:.1f}",
                        f"{100 * r['fraction_of_backbone_batch1']:.2f}",
                    ]
                    for r in comparison["decision_overhead"]
                ],
            ),
            "",
        ]
    out += [
        "![policies](policies.png)",
        "",
        "![exit distributions at matched compute](matched_distributions.png)",
        "",
        "![accuracy at matched compute](accuracy_at_levels.png)",
        "",
        "Every point: `policies.csv` / `policies.json`.",
        "",
    ]
    return "\n".join(out)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(markdown: str, run_dir: Path, title: str) -> str:
    """A self-contained HTML page from the report's markdown (plots embedded as data URIs).

    Handles the subset `render_markdown` writes: headings, paragraphs, bullets, tables, images.
    """
    body: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not re.fullmatch(r"\|(---\|)+", lines[i]):
                    rows.append([c.strip() for c in lines[i].strip("|").split(" | ")])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            cells = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            continue
        elif m := re.fullmatch(r"!\[(.*)\]\((.+)\)", line):
            img = run_dir / m.group(2)
            if img.is_file():
                data = base64.b64encode(img.read_bytes()).decode("ascii")
                body.append(
                    f'<p><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"></p>'
                )
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;"
        "font-size:.9em}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-run the evaluation") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a results object; re-run the evaluation")
    return data


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, a self-contained report.html and the plots from a run folder's results.

    Reads `results.json` (the knob sweep, `bofexits evaluate` / `demo`) and `policies.json`
    (the policy comparison, `bofexits sweep` / `demo`); at least one must be there.
    """
    run_dir = Path(run_dir)
    results = _read_json(run_dir / "results.json")
    comparison = _read_json(run_dir / "policies.json")
    if results is None and comparison is None:
        raise ConfigError(
            f"{run_dir} has neither results.json nor policies.json; run `bofexits evaluate`, "
            "`bofexits sweep` or `bofexits demo` first"
        )
    try:
        parts = []
        if results is not None:
            plot_accuracy_vs_compute(results, run_dir / "accuracy_vs_compute.png")
            plot_exit_distribution(results, run_dir / "exit_distribution.png")
            parts.append(render_markdown(results))
        if comparison is not None:
            plot_policies(comparison, run_dir / "policies.png")
            plot_matched_distributions(comparison, run_dir / "matched_distributions.png")
            plot_accuracy_at_levels(comparison, run_dir / "accuracy_at_levels.png")
            if results is None:
                parts.append("# bofexits report: policy comparison\n")
            parts.append(render_comparison(comparison))
    except KeyError as exc:
        raise ConfigError(
            f"the results in {run_dir} lack the field {exc}; they come from another bofexits version: re-run"
        ) from exc
    text = "\n".join(parts)
    path = run_dir / "report.md"
    write_text(path, text)
    title = f"bofexits report: {(results or {}).get('dataset', run_dir.name)}"
    write_text(run_dir / "report.html", render_html(text, run_dir, title))
    return path
