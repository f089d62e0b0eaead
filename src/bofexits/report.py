"""Render `report.md` (and its plots) from a run folder's `results.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._io import write_text
from .errors import ConfigError
from .plots import plot_accuracy_vs_compute, plot_exit_distribution
from .sweep import knee_point

__all__ = ["check_targets", "render_markdown", "write_report"]

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


def write_report(run_dir: str | Path) -> Path:
    """Write report.md and the plots next to `run_dir/results.json`."""
    run_dir = Path(run_dir)
    src = run_dir / "results.json"
    try:
        results = json.loads(src.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{src} not found; run `bofexits evaluate` or `bofexits demo` first") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{src} is not valid JSON ({exc}); re-run the evaluation") from exc
    plot_accuracy_vs_compute(results, run_dir / "accuracy_vs_compute.png")
    plot_exit_distribution(results, run_dir / "exit_distribution.png")
    path = run_dir / "report.md"
    write_text(path, render_markdown(results))
    return path
