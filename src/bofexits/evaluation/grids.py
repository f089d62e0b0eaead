"""Knob grids: the values of each policy's knob that sweeps, comparisons and tuning evaluate.

The calibrated rule's beta lives in [0, 1] for the quantile variants and around 1 for the
mean variant (docs/method.md §5); threshold policies get evenly spaced quantiles of their
score on validation data, so every policy is sampled at the same resolution along its own axis.
"""

from __future__ import annotations

import torch

from bofexits.options import GRID_POINTS

__all__ = ["DEFAULT_BETAS", "GRID_POINTS", "beta_grid", "quantile_grid"]

DEFAULT_BETAS: dict[str, list[float]] = {
    "mean": [0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0],
    "quantile": [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    # Denser near the knee (about 0.45-0.5 on the demo network), where the choice is made.
    "conditional": [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.425, 0.45, 0.475, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0],
    # Calibrated accuracy: the interesting range is near the exits' own accuracies (0.8-1).
    "accuracy": [0.0, 0.5, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999, 1.0],
}
"""The knob values a sweep reports for each variant of the calibrated rule."""


def beta_grid(variant: str, points: int = GRID_POINTS) -> list[float]:
    """Knob values to search: [0, 1] for the quantile rules, [0.5, 3] for the mean rule, and
    for the accuracy rule half the points even in [0, 0.9) and half even in log(1 - beta) over
    [0.9, 0.999], then 1: the exits' accuracies put much of the knob's range near 1.

    >>> beta_grid("quantile", 3)
    [0.0, 0.5, 1.0]
    >>> [round(b, 4) for b in beta_grid("accuracy", 7)]
    [0.0, 0.3, 0.6, 0.9, 0.99, 0.999, 1.0]
    >>> beta_grid("accuracy", 2), [round(b, 4) for b in beta_grid("accuracy", 3)]
    ([0.0, 1.0], [0.0, 0.9, 1.0])
    """
    if variant == "accuracy":  # even in beta up to 0.9, then even in log(1 - beta) up to 0.999, then 1
        lin = max(1, (points - 1) // 2)  # at least 0 itself
        log = points - 1 - lin
        return [
            *(0.9 * i / lin for i in range(lin)),
            *(1 - 0.1 * 10 ** (-2 * i / max(1, log - 1)) for i in range(log)),
            1.0,
        ]
    lo, hi = (0.5, 3.0) if variant == "mean" else (0.0, 1.0)
    return [lo + (hi - lo) * i / (points - 1) for i in range(points)]


def quantile_grid(scores: torch.Tensor, points: int) -> list[float]:
    """Thresholds at evenly spaced quantiles of validation scores: even coverage of the range.

    >>> quantile_grid(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]), 3)
    [0.0, 2.0, 4.0]
    """
    levels = torch.linspace(0, 1, points, dtype=torch.float64)
    return sorted({float(v) for v in torch.quantile(scores.double(), levels)})
