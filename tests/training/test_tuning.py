"""Choosing beta for a target on validation outputs; unreachable targets say so."""

from __future__ import annotations

import pytest
import torch

from bofexits.errors import ConfigError, TargetUnreachableError
from bofexits.evaluation.cost import CostTable
from bofexits.policies import ExitCalibration
from bofexits.training.tuning import tune_beta


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
    loose = tune_beta(logits, labels, cal, costs, variant="quantile", max_drop=5.0)
    tight = tune_beta(logits, labels, cal, costs, variant="quantile", max_drop=0.5)
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
        tune_beta(logits, labels, cal, costs, budget=0.5, max_drop=1.0)
    with pytest.raises(ConfigError, match="latency"):
        tune_beta(logits, labels, cal, costs, latency_ms=1.0)
