"""The targets the demo network is held to, each checked against a sweep (no target is hidden)."""

from __future__ import annotations

from dataclasses import dataclass

from bofexits.evaluation.points import MAX_DROP
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.format import pct, times

__all__ = [
    "TARGET_EXIT_COST",
    "TARGET_FINAL_ACC",
    "TARGET_MAX_MACS",
    "TARGET_SPEEDUP",
    "Target",
    "check_targets",
]

TARGET_FINAL_ACC = 0.925
"""The final exit's test accuracy must reach this."""
TARGET_MAX_MACS = 0.60
"""The knee must use at most this share of the backbone's MACs."""
TARGET_SPEEDUP = 1.5
"""The knee's batch-1 wall-clock speedup over the plain backbone must reach this."""
TARGET_EXIT_COST = 0.05
"""All exit heads together may cost at most this share of the backbone's MACs and parameters."""


@dataclass
class Target:
    """One target: what it asks, what was measured, whether it is met."""

    target: str
    measured: str
    met: bool


def check_targets(result: Sweep) -> list[Target]:
    """Each target with the measured value and whether it is met."""
    costs, full = result.costs, result.full_accuracy
    exit_macs, exit_params = costs.exit_macs_fraction, costs.exit_params_fraction
    within = f"within {100 * MAX_DROP:g} pp of"
    rows = [
        Target(
            f"final exit test accuracy >= {pct(TARGET_FINAL_ACC, 1)}", pct(full), full >= TARGET_FINAL_ACC
        ),
        Target(
            f"BoF exits <= {pct(TARGET_EXIT_COST, 0)} of backbone MACs and parameters",
            f"{pct(exit_macs)} MACs, {pct(exit_params)} params",
            exit_macs <= TARGET_EXIT_COST and exit_params <= TARGET_EXIT_COST,
        ),
    ]
    knee = result.knee()
    if knee is None:
        return [*rows, Target(f"a beta {within} the final exit", "none", False)]
    speedup = knee.timing.batch1_speedup if knee.timing else float("nan")
    return [
        *rows,
        Target(
            f"knee (cheapest beta {within} final) uses <= {pct(TARGET_MAX_MACS, 0)} of MACs",
            f"beta={knee.value:g}: {pct(knee.accuracy)} at {pct(knee.relative_macs, 1)}",
            knee.relative_macs <= TARGET_MAX_MACS,
        ),
        Target(
            f"knee batch-1 wall-clock speedup >= {TARGET_SPEEDUP:g}x vs plain backbone",
            times(speedup),
            speedup >= TARGET_SPEEDUP,
        ),
    ]
