"""Choosing beta for a target on validation outputs; unreachable targets say so."""

from __future__ import annotations

import pytest
import torch

from bofexits.errors import ConfigError, TargetUnreachableError
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import knee_point
from bofexits.policies import ExitCalibration
from bofexits.training.tuning import beta_points, tune_beta


def _setup(
    n: int = 400, seed: int = 0
) -> tuple[list[torch.Tensor], torch.Tensor, ExitCalibration, CostTable]:
    """Three exits whose accuracy and confidence grow with depth."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=gen)
    logits = []
    for strength in (1.0, 2.0, 4.0):
        lg = torch.randn(n, 5, generator=gen)
        lg[torch.arange(n), labels] += strength
        logits.append(lg)
    cal = ExitCalibration.fit(logits[:-1], "max_prob")
    costs = CostTable([30, 30, 40], [1, 1], [1, 1, 1], 2)
    return logits, labels, cal, costs


def test_max_drop_picks_the_cheapest_beta_within_the_drop() -> None:
    logits, labels, cal, costs = _setup()
    loose = tune_beta(logits, labels, cal, costs, variant="quantile", max_drop_pp=5.0)
    tight = tune_beta(logits, labels, cal, costs, variant="quantile", max_drop_pp=0.5)
    for r in (loose, tight):
        assert r.val_accuracy >= r.val_full_accuracy - float(r.target.split("=")[1][:-2]) / 100 - 1e-9
    assert loose.val_relative_macs <= tight.val_relative_macs


def test_budget_is_respected_and_unreachable_budget_names_the_closest_point() -> None:
    logits, labels, cal, costs = _setup()
    r = tune_beta(logits, labels, cal, costs, variant="quantile", budget=0.6)
    assert r.val_relative_macs <= 0.6
    with pytest.raises(TargetUnreachableError, match="cheapest is beta=0"):
        tune_beta(logits, labels, cal, costs, variant="quantile", budget=0.1)


def test_latency_target_uses_measured_exit_latencies() -> None:
    logits, labels, cal, costs = _setup()
    r = tune_beta(
        logits, labels, cal, costs, variant="quantile", latency_ms=0.5, exit_latency_ms=[0.2, 0.5, 1.0]
    )
    assert r.val_latency_ms is not None and r.val_latency_ms <= 0.5
    with pytest.raises(TargetUnreachableError, match="fastest"):
        tune_beta(
            logits, labels, cal, costs, variant="quantile", latency_ms=0.1, exit_latency_ms=[0.2, 0.5, 1.0]
        )


def test_exactly_one_target() -> None:
    logits, labels, cal, costs = _setup()
    with pytest.raises(ConfigError, match="exactly one target"):
        tune_beta(logits, labels, cal, costs, budget=0.5, max_drop_pp=1.0)
    with pytest.raises(ConfigError, match="latency"):
        tune_beta(logits, labels, cal, costs, latency_ms=1.0)


@pytest.mark.parametrize("variant", ["accuracy", "conditional", "quantile", "mean"])
def test_tune_and_the_comparison_pick_the_same_knee(variant: str) -> None:
    """`tune --max-drop` is the report's knee on the same split and grid: same points, same choice."""
    from bofexits.evaluation.compare import _simulate_family
    from bofexits.evaluation.families import policy_families
    from bofexits.evaluation.metrics import accuracy

    logits, labels, _, costs = _setup(n=200)
    cal = ExitCalibration.fit(logits[:-1], "max_prob", labels)
    full = accuracy(logits[-1].argmax(1), labels)
    fams = policy_families({"max_prob": cal}, logits, costs, score="max_prob", variant=variant, points=41)
    knee = _simulate_family(fams[0], logits, labels, costs, full).knee  # what the report shows
    found = tune_beta(logits, labels, cal, costs, variant=variant, max_drop_pp=0.5, points=41)
    assert knee is not None and found.beta == knee.value
    assert (found.val_accuracy, found.val_relative_macs) == (knee.accuracy, knee.relative_macs)
    candidates = beta_points(logits, labels, cal, costs, variant, points=41)
    for drop_pp in (0.0, 2.0, 10.0):  # any tolerance: `knee_point`, the unit converted once
        knee_at = knee_point(candidates, full, drop_pp / 100)
        tuned = tune_beta(logits, labels, cal, costs, variant=variant, max_drop_pp=drop_pp, points=41)
        assert knee_at is not None and tuned.beta == knee_at.value


def test_tune_and_the_comparison_share_one_grid() -> None:
    import inspect

    from bofexits.evaluation.compare import compare_policies
    from bofexits.evaluation.families import policy_families
    from bofexits.options import GRID_POINTS
    from bofexits.training.tuning import tune_on_validation

    for fn in (compare_policies, policy_families, tune_beta, tune_on_validation):
        assert inspect.signature(fn).parameters["points"].default == GRID_POINTS, fn


def test_max_drop_is_named_in_percentage_points() -> None:
    logits, labels, cal, costs = _setup()
    with pytest.raises(TypeError, match="max_drop"):
        tune_beta(logits, labels, cal, costs, max_drop=0.5)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="percentage points"):
        tune_beta(logits, labels, cal, costs, max_drop_pp=150.0)
