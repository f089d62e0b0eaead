"""Plots of a sweep: accuracy vs compute, and the exit distribution at each knob value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bofexits._io import atomic_path  # noqa: E402

__all__ = [
    "plot_accuracy_at_levels",
    "plot_accuracy_vs_compute",
    "plot_exit_distribution",
    "plot_matched_distributions",
    "plot_policies",
]


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_accuracy_vs_compute(results: dict[str, Any], path: str | Path) -> Path:
    """Accuracy (%) against mean MACs relative to the backbone, one curve per rule configuration."""
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {
        f"{results['score']}/{results['variant']} (headline)": results["points"],
        **results["comparisons"],
    }
    for name, pts in curves.items():
        ax.plot(
            [100 * p["relative_macs"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            "o-",
            ms=3,
            label=name,
        )
    costs = results["costs"]
    singles = [m / costs["backbone_macs"] * 100 for m in costs["macs_at_exit"]]
    ax.plot(
        singles, [100 * a for a in results["per_exit_accuracy"]], "s--", color="grey", label="single exits"
    )
    o = results["oracle"]
    ax.plot([100 * o["relative_macs"]], [100 * o["accuracy"]], "*", ms=12, color="black", label="oracle")
    ax.axhline(100 * results["full_accuracy"] - 0.5, color="red", lw=0.8, ls=":", label="full - 0.5 pp")
    ax.set_xlabel("mean MACs per sample (% of plain backbone)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    lo = min(100 * results["per_exit_accuracy"][-1] - 6, min(100 * p["accuracy"] for p in results["points"]))
    ax.set_ylim(max(lo, 0), 100 * max(o["accuracy"], results["full_accuracy"]) + 1)
    path = Path(path)
    _save(fig, path)
    return path


def plot_exit_distribution(results: dict[str, Any], path: str | Path) -> Path:
    """Stacked bars: fraction of test samples leaving at each exit, per knob value."""
    pts = results["points"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = [0.0] * len(pts)
    xs = list(range(len(pts)))  # positions, not strings: categorical axes log a line per call
    for e in range(len(pts[0]["exit_fractions"])):
        vals = [p["exit_fractions"][e] for p in pts]
        ax.bar(xs, vals, bottom=bottom, label=f"exit {e + 1}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(xs, [f"{p['beta']:g}" for p in pts], fontsize=7)
    ax.set_xlabel(f"beta ({results['variant']} rule on {results['score']})")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    path = Path(path)
    _save(fig, path)
    return path


_COMPARED = ("proposed", "max-softmax", "entropy", "patience", "budgeted")


def plot_policies(comparison: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against mean MACs, one curve per policy, with the oracle's frontier above them all."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam in comparison["families"]:
        pts = sorted(fam["points"], key=lambda p: p["relative_macs"])
        style = "-" if fam["timed"] else ":"
        ax.plot(
            [100 * p["relative_macs"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            style,
            marker="o" if len(pts) < 30 else None,
            ms=3,
            lw=2.2 if fam["proposed"] else 1.1,
            label=fam["label"],
        )
    front = comparison["oracle"]["frontier"]
    ax.plot(
        [100 * m for m, _ in front], [100 * a for _, a in front], color="black", lw=1, label="oracle frontier"
    )
    full = 100 * comparison["full_accuracy"]
    ax.axhline(full - 0.5, color="red", lw=0.8, ls=":", label="full network - 0.5 pp")
    for lv in comparison["levels"]:
        ax.axvline(100 * lv, color="grey", lw=0.6, ls="--")
    ax.set_xlabel("mean MACs per sample (% of plain backbone)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(full - 5, max(full, 100 * comparison["oracle"]["accuracy"]) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.set_title("simulated from all exits' outputs (timed points also run for real)", fontsize=8)
    path = Path(path)
    _save(fig, path)
    return path


def plot_matched_distributions(comparison: dict[str, Any], path: str | Path) -> Path:
    """Exit distributions of each policy at matched compute (its best point within each level)."""
    levels = [str(f"{lv:g}") for lv in comparison["levels"]]
    fams = [f for f in comparison["families"] if f["name"] in _COMPARED]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, level in zip(axes, levels, strict=True):
        names = [f["name"] for f in fams]
        bottom = [0.0] * len(fams)
        pts = [f["at_levels"][level] for f in fams]
        s = len(comparison["costs"]["macs_at_exit"])
        xs = list(range(len(names)))
        for e in range(s):
            vals = [p["exit_fractions"][e] if p else 0.0 for p in pts]
            ax.bar(xs, vals, bottom=bottom, color=colors[e % len(colors)], label=f"exit {e + 1}")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        for i, p in enumerate(pts):
            ax.text(i, 1.02, "n/a" if p is None else f"{p['balance']:.2f}", ha="center", fontsize=7)
        if all(p is None for p in pts):
            costs = comparison["costs"]
            first = costs["macs_at_exit"][0] / costs["backbone_macs"]
            msg = f"unreachable:\nexit 1 alone costs\n{first:.1%} of the MACs"
            ax.text((len(names) - 1) / 2, 0.5, msg, ha="center", va="center", fontsize=8)
        ax.set_title(f"<= {float(level):.0%} of the MACs (balance on top)", fontsize=8)
        ax.set_xticks(xs, names, rotation=45, fontsize=7)
        ax.set_ylim(0, 1.1)
    axes[0].set_ylabel("fraction of test samples")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    path = Path(path)
    _save(fig, path)
    return path


def plot_accuracy_at_levels(comparison: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars: each policy's best accuracy within 25/50/75% of the backbone's MACs."""
    levels = [f"{lv:g}" for lv in comparison["levels"]]
    fams = [f for f in comparison["families"] if f["name"] in _COMPARED]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(fams)
    full = 100 * comparison["full_accuracy"]
    for j, fam in enumerate(fams):
        xs, ys = [], []
        for i, level in enumerate(levels):
            p = fam["at_levels"][level]
            if p is not None:
                xs.append(i + (j - (len(fams) - 1) / 2) * width)
                ys.append(100 * p["accuracy"])
        ax.bar(xs, ys, width, label=fam["label"])
    ax.set_xticks(range(len(levels)), [f"<= {float(lv):.0%} MACs" for lv in levels])
    ax.axhline(full, color="black", lw=0.8, ls=":", label="full network")
    ax.set_ylim(full - 8, full + 1.5)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.legend(fontsize=6.5, ncol=2, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    path = Path(path)
    _save(fig, path)
    return path
