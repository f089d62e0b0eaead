"""Hand-made evaluation results (a knob sweep and a policy comparison), built in microseconds.

`tests/reporting/conftest.py` loads these fixtures too, so the report is tested on the same results.
"""

from __future__ import annotations

import numpy as np
import pytest

from bofexits.evaluation.comparison import (
    BASELINES,
    Comparison,
    ComparisonTiming,
    Contrast,
    DecisionOverhead,
    FamilyResult,
    RuntimeCheck,
)
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import LEVELS, Point, PointTiming, at_levels, knee_point
from bofexits.evaluation.significance import paired_bootstrap
from bofexits.evaluation.sweep import Sweep, SweepTiming, TrainingInfo
from bofexits.evaluation.timing import Platform
from bofexits.reporting.claims import check_claims

COSTS = CostTable(
    stage_macs=[25, 25, 25, 25], exit_macs=[1, 1, 1], stage_params=[10, 10, 10, 10], exit_params=2
)
PLATFORM = Platform("x86_64", "Test CPU", 2, "2.0", 1)


def timing(speedup: float) -> PointTiming:
    return PointTiming(
        batch1_ms=1.0 / speedup,
        batch1_speedup=speedup,
        batched_ms=0.5 / speedup,
        batched_speedup=speedup * 0.9,
        batch1_mean_ms=1.1 / speedup,
        batch1_p50_ms=1.0 / speedup,
        batch1_p95_ms=1.5 / speedup,
        batch1_p99_ms=2.0 / speedup,
        batched_mean_ms=0.55 / speedup,
    )


def point(
    knob: str | None, value: float | None, acc: float, macs: float, fractions: list[float], **kw: object
) -> Point:
    return Point(acc, macs * 100, macs, fractions, 0.5, knob=knob, value=value, **kw)  # type: ignore[arg-type]


def make_sweep() -> Sweep:
    pts = [
        point(
            "beta", 0.0, 0.80, 0.26, [1.0, 0.0, 0.0, 0.0], thresholds=[float("-inf")] * 3, timing=timing(3.0)
        ),
        point("beta", 0.5, 0.90, 0.55, [0.4, 0.3, 0.2, 0.1], thresholds=[0.5, 0.6, 0.7], timing=timing(1.6)),
        point(
            "beta", 1.0, 0.91, 1.03, [0.0, 0.0, 0.0, 1.0], thresholds=[float("inf")] * 3, timing=timing(0.97)
        ),
    ]
    return Sweep(
        score="max_prob",
        variant="conditional",
        num_test=100,
        platform=PLATFORM,
        costs=COSTS,
        per_exit_accuracy=[0.8, 0.85, 0.88, 0.91],
        oracle=point(None, None, 0.95, 0.4, [0.7, 0.1, 0.1, 0.1]),
        points=pts,
        comparisons={"max_prob/mean": [point("beta", 1.0, 0.85, 0.5, [0.5, 0.5, 0.0, 0.0])]},
        simulation_matches_runtime=True,
        timing=SweepTiming(1, 3, 16, 100, 2, 1.0, 0.5, batch1_paths_agree=True),
        dataset="fashion-mnist",
        training=TrainingInfo("vgg28", 3, "two-phase", "train", 90.0, [{"epoch": 1}]),
    )


def _family(
    name: str, knob: str, rows: list[tuple[float, float, float]], full: float, **kw: bool
) -> FamilyResult:
    pts = [
        point(knob, v, acc, macs, [0.5, 0.2, 0.2, 0.1], index=i, timing=timing(1 / macs) if i % 2 else None)
        for i, (v, acc, macs) in enumerate(rows)
    ]
    return FamilyResult(name, f"{name} label", knob, kw.get("proposed", False), kw.get("timed", True), pts,
                        knee_point(pts, full), at_levels(pts, LEVELS))  # fmt: skip


def paired_correct(acc_a: float, acc_b: float, n: int, swaps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(n,) per-image correctness of two policies with these accuracies: right together on most
    images, and each right alone on a few (`swaps` of them both ways, plus the accuracy gap)."""
    ka, kb = round(acc_a * n), round(acc_b * n)
    common = min(ka, kb) - swaps
    a, b = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    a[:ka] = True
    b[:common] = True
    b[ka : ka + kb - common] = True
    return a, b


def contrasts_of(comparison: Comparison) -> list[Contrast]:
    """Contrasts as `compare_policies` builds them, from per-image results made up to match the points."""
    prop, out = comparison.proposed, []
    targets = [(lv, False, p) for lv, p in prop.at_levels.items()]
    targets += [(prop.knee.relative_macs, True, prop.knee)] if prop.knee else []
    for level, knee, p in targets:
        best = comparison.best_baseline(level, BASELINES)
        if p is None or best is None:
            continue
        a, b = paired_correct(p.accuracy, best[1].accuracy, comparison.num_test)
        out.append(Contrast(level, knee, best[0], p.index or 0, best[1].index or 0, paired_bootstrap(a, b)))
    return out


def make_comparison() -> Comparison:
    full = 0.91
    fams = [
        _family(
            "proposed",
            "beta",
            [(0.0, 0.8, 0.26), (0.4, 0.9, 0.45), (0.6, 0.907, 0.6), (1.0, 0.91, 1.03)],
            full,
            proposed=True,
        ),  # fmt: skip
        _family("max-softmax", "threshold", [(0.1, 0.8, 0.26), (0.5, 0.89, 0.45), (0.9, 0.906, 0.7)], full),
        _family("entropy", "threshold", [(2.0, 0.8, 0.26), (0.5, 0.88, 0.5), (0.1, 0.91, 0.9)], full),
        _family("patience", "patience", [(1.0, 0.85, 0.4), (2.0, 0.9, 0.8)], full),
        _family("rule-max_logit-mean", "beta", [(0.5, 0.8, 0.3), (1.0, 0.9, 0.6)], full, timed=False),
    ]
    comparison = Comparison(
        num_test=1000,
        num_val=30,
        platform=PLATFORM,
        costs=COSTS,
        full_accuracy=full,
        oracle=point(None, None, 0.95, 0.4, [0.7, 0.1, 0.1, 0.1]),
        frontier=[(0.26, 0.8), (0.35, 0.9), (0.4, 0.95)],
        families=fams,
        exit_confidence_medians=[0.7, 0.8, 0.9],
        timing=ComparisonTiming(1, 3, 16, 32, 1, 1.0, 0.5, runtime_check=RuntimeCheck(6, 32, 0, 0)),
        decision_overhead=[
            DecisionOverhead("proposed", 5.0, 0.005),
            DecisionOverhead("max-softmax", 4.0, 0.004),
        ],
    )
    comparison.contrasts = contrasts_of(comparison)
    comparison.claims = check_claims(comparison)
    return comparison


@pytest.fixture
def sweep_result() -> Sweep:
    return make_sweep()


@pytest.fixture
def comparison_result() -> Comparison:
    return make_comparison()
