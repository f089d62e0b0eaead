"""Plots of a sweep (accuracy vs compute, the exit distribution at each knob value) and of a
policy comparison (every policy's curve, exit distributions and accuracy at matched compute)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bofexits._io import atomic_path  # noqa: E402
from bofexits.evaluation.comparison import Comparison  # noqa: E402
from bofexits.evaluation.points import MAX_DROP  # noqa: E402
from bofexits.evaluation.sweep import Sweep  # noqa: E402

__all__ = [
    "plot_accuracy_at_levels",
    "plot_accuracy_vs_compute",
    "plot_exit_distribution",
    "plot_matched_distributions",
    "plot_policies",
]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _knee_line(ax: Any, full_accuracy: float, label: str) -> None:
    """The knee's accuracy bar: `MAX_DROP` below the full network."""
    drop = 100 * MAX_DROP
    ax.axhline(100 * full_accuracy - drop, color="red", lw=0.8, ls=":", label=f"{label} - {drop:g} pp")


def plot_accuracy_vs_compute(result: Sweep, path: str | Path) -> Path:
    """Accuracy (%) against mean MACs relative to the backbone, one curve per rule configuration."""
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {f"{result.score}/{result.variant} (headline)": result.points, **result.comparisons}
    for name, pts in curves.items():
        ax.plot([100 * p.relative_macs for p in pts], [100 * p.accuracy for p in pts], "o-", ms=3, label=name)
    costs = result.costs
    singles = [m / costs.backbone_macs * 100 for m in costs.macs_at_exit()]
    ax.plot(singles, [100 * a for a in result.per_exit_accuracy], "s--", color="grey", label="single exits")
    o = result.oracle
    ax.plot([100 * o.relative_macs], [100 * o.accuracy], "*", ms=12, color="black", label="oracle")
    _knee_line(ax, result.full_accuracy, "full")
    ax.set_xlabel("mean MACs per sample (% of plain backbone)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    lo = min(100 * result.full_accuracy - 6, min(100 * p.accuracy for p in result.points))
    ax.set_ylim(max(lo, 0), 100 * max(o.accuracy, result.full_accuracy) + 1)
    return _save(fig, path)


def plot_exit_distribution(result: Sweep, path: str | Path) -> Path:
    """Stacked bars: fraction of test samples leaving at each exit, per knob value."""
    pts = result.points
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(pts)
    xs = list(range(len(pts)))  # positions, not strings: categorical axes log a line per call
    for e in range(len(pts[0].exit_fractions)):
        vals = [p.exit_fractions[e] for p in pts]
        ax.bar(xs, vals, bottom=bottom, label=f"exit {e + 1}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(xs, [f"{p.value:g}" for p in pts], fontsize=7)
    ax.set_xlabel(f"beta ({result.variant} rule on {result.score})")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _save(fig, path)


_COMPARED = ("proposed", "max-softmax", "entropy", "patience", "budgeted")


def plot_policies(comparison: Comparison, path: str | Path) -> Path:
    """Accuracy against mean MACs, one curve per policy, with the oracle's frontier above them all."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam in comparison.families:
        pts = sorted(fam.points, key=lambda p: p.relative_macs)
        ax.plot(
            [100 * p.relative_macs for p in pts],
            [100 * p.accuracy for p in pts],
            "-" if fam.timed else ":",
            marker="o" if len(pts) < 30 else None,
            ms=3,
            lw=2.2 if fam.proposed else 1.1,
            label=fam.label,
        )
    front = comparison.frontier
    ax.plot(
        [100 * m for m, _ in front], [100 * a for _, a in front], color="black", lw=1, label="oracle frontier"
    )
    full = 100 * comparison.full_accuracy
    _knee_line(ax, comparison.full_accuracy, "full network")
    for lv in comparison.levels:
        ax.axvline(100 * lv, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("mean MACs per sample (% of plain backbone)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(full - 5, max(full, 100 * comparison.oracle.accuracy) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title("simulated from all exits' outputs (timed points also run for real)", fontsize=8)
    return _save(fig, path)


def plot_matched_distributions(comparison: Comparison, path: str | Path) -> Path:
    """Exit distributions of each policy at matched compute (its best point within each level)."""
    levels = comparison.levels
    fams = [f for f in comparison.families if f.name in _COMPARED]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    costs = comparison.costs
    for ax, level in zip(axes, levels, strict=True):
        names = [f.name for f in fams]
        bottom = [0.0] * len(fams)
        pts = [f.at_levels[level] for f in fams]
        xs = list(range(len(names)))
        for e in range(len(costs.stage_macs)):
            vals = [p.exit_fractions[e] if p else 0.0 for p in pts]
            ax.bar(xs, vals, bottom=bottom, color=colors[e % len(colors)], label=f"exit {e + 1}")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        for i, p in enumerate(pts):
            ax.text(i, 1.02, "n/a" if p is None else f"{p.balance:.2f}", ha="center", fontsize=7)
        if all(p is None for p in pts):
            first = costs.first_exit_fraction
            msg = f"unreachable:\nexit 1 alone costs\n{first:.1%} of the MACs"
            ax.text((len(names) - 1) / 2, 0.5, msg, ha="center", va="center", fontsize=8)
        ax.set_title(f"<= {level:.0%} of the MACs (balance on top)", fontsize=8)
        ax.set_xticks(xs, names, rotation=45, fontsize=7)
        ax.set_ylim(0, 1.1)
    axes[0].set_ylabel("fraction of test samples")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_accuracy_at_levels(comparison: Comparison, path: str | Path) -> Path:
    """Grouped bars: each policy's best accuracy within each compute level of the backbone's MACs."""
    levels = comparison.levels
    fams = [f for f in comparison.families if f.name in _COMPARED]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(fams)
    full = 100 * comparison.full_accuracy
    for j, fam in enumerate(fams):
        xs, ys = [], []
        for i, level in enumerate(levels):
            p = fam.at_levels[level]
            if p is not None:
                xs.append(i + (j - (len(fams) - 1) / 2) * width)
                ys.append(100 * p.accuracy)
        ax.bar(xs, ys, width, label=fam.label)
    ax.set_xticks(range(len(levels)), [f"<= {lv:.0%} MACs" for lv in levels])
    ax.axhline(full, color="black", lw=0.8, ls=":", label="full network")
    ax.set_ylim(full - 8, full + 1.5)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=6.5, ncol=2, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
