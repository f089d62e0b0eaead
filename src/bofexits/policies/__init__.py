"""Exit policies: which exit each sample stops at. Registry: `create_policy`, `list_policies`."""

from __future__ import annotations

from typing import Any

from bofexits.errors import ConfigError
from bofexits.policies.base import ExitPolicy
from bofexits.policies.budgeted import BudgetedThreshold, fit_budgeted_thresholds
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration, calibrated_thresholds
from bofexits.policies.fixed import FullNetwork, SingleExit
from bofexits.policies.patience import Patience
from bofexits.policies.scores import SCORES, confidence
from bofexits.policies.thresholds import EntropyThreshold, GlobalThreshold

__all__ = [
    "SCORES",
    "BudgetedThreshold",
    "CalibratedThreshold",
    "EntropyThreshold",
    "ExitCalibration",
    "ExitPolicy",
    "FullNetwork",
    "GlobalThreshold",
    "Patience",
    "SingleExit",
    "calibrated_thresholds",
    "confidence",
    "create_policy",
    "fit_budgeted_thresholds",
    "list_policies",
]

_REGISTRY: dict[str, type[ExitPolicy]] = {
    "calibrated": CalibratedThreshold,
    "max-softmax": GlobalThreshold,
    "entropy": EntropyThreshold,
    "patience": Patience,
    "budgeted": BudgetedThreshold,
    "single-exit": SingleExit,
    "full": FullNetwork,
}


def list_policies() -> list[str]:
    """Names accepted by `create_policy`."""
    return sorted(_REGISTRY)


def create_policy(name: str, **kwargs: Any) -> ExitPolicy:
    """Build a policy by name, e.g. ``create_policy("calibrated", calibration=cal, beta=1.2)``."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(list_policies())}")
    return _REGISTRY[name](**kwargs)
