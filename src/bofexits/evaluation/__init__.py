"""Measuring a trained multi-exit network: what every number in a report comes from.

* `collect`: all exits' logits on a split; `metrics`: accuracy, exit distribution, balance;
  `cost`: MACs counted from what ran (docs/method.md §6).
* `timing`: the interleaved timer (A B A B ..., per-call times for mean / p50 / p95 / p99);
  `timed`: runtimes against the plain backbone at batch 1 and batched, the one place this is done.
* `points`: one operating point, the knee (cheapest within `MAX_DROP`), matched compute levels;
  `grids`: knob grids.
* `sweep`: the proposed rule's knob with real early exit (`Sweep`); `families` + `compare`:
  every policy side by side (`Comparison`, in `comparison`, with the `Check` and `Claim` types
  that `bofexits.reporting.claims` fills in from it). `schema`: the versioned `to_dict` / `from_dict` of these results.
"""

from __future__ import annotations

from bofexits.evaluation.compare import compare_policies
from bofexits.evaluation.comparison import Check, Claim, Comparison, FamilyResult
from bofexits.evaluation.cost import CostTable, count_macs, measure_costs
from bofexits.evaluation.metrics import accuracy, balance, exit_distribution, relative_compute
from bofexits.evaluation.points import (
    LEVELS,
    MAX_DROP,
    Point,
    at_compute,
    cheapest_reaching,
    knee_point,
    runtime_efficiency,
)
from bofexits.evaluation.sweep import Sweep, sweep
from bofexits.evaluation.timing import Timing, interleaved_timing

__all__ = [
    "LEVELS",
    "MAX_DROP",
    "Check",
    "Claim",
    "Comparison",
    "CostTable",
    "FamilyResult",
    "Point",
    "Sweep",
    "Timing",
    "accuracy",
    "at_compute",
    "balance",
    "cheapest_reaching",
    "compare_policies",
    "count_macs",
    "exit_distribution",
    "interleaved_timing",
    "knee_point",
    "runtime_efficiency",
    "measure_costs",
    "relative_compute",
    "sweep",
]
