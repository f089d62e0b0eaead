"""Plots of a sweep: accuracy vs compute, and the exit distribution at each knob value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._io import atomic_path  # noqa: E402

__all__ = ["plot_accuracy_vs_compute", "plot_exit_distribution"]


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
    labels = [f"{p['beta']:g}" for p in pts]
    for e in range(len(pts[0]["exit_fractions"])):
        vals = [p["exit_fractions"][e] for p in pts]
        ax.bar(labels, vals, bottom=bottom, label=f"exit {e + 1}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xlabel(f"beta ({results['variant']} rule on {results['score']})")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    path = Path(path)
    _save(fig, path)
    return path
