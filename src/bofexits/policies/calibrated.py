"""The proposed rule: per-exit thresholds calibrated on data, one interpretable knob beta.

Early exits are systematically less confident than late ones, so one global threshold
piles samples up at one end. Calibrating each exit against its own score distribution makes
beta mean the same thing at every exit (docs/method.md §5). Four variants read beta:
"accuracy" (the default: stop once the exit is right a share beta of the time at this
score), "conditional" (each exit passes on a share beta of what reaches it), "quantile"
(the beta-quantile of the exit's scores) and "mean" (beta times the exit's mean score, the
original rule). The statistics are fitted in `policies.calibration`.
"""

from __future__ import annotations

from typing import Any

import torch

from bofexits.errors import ConfigError
from bofexits.options import DEFAULT_SCORE, DEFAULT_VARIANT, VARIANTS, Variant
from bofexits.policies.base import ExitPolicy
from bofexits.policies.calibration import (  # re-exported: fitted here before the split
    GRID,
    NEVER,
    CalibrationError,
    ExitCalibration,
    accuracy_thresholds,
    conditional_quantiles,
    isotonic_blocks,
)
from bofexits.policies.scores import confidence, scalar_confidence

__all__ = [
    "DEFAULT_SCORE",
    "DEFAULT_VARIANT",
    "NEVER",
    "VARIANTS",
    "CalibratedThreshold",
    "CalibrationError",
    "ExitCalibration",
    "Variant",
    "accuracy_thresholds",
    "calibrated_thresholds",
    "conditional_quantiles",
    "isotonic_blocks",
]

_GRID = GRID


def calibrated_thresholds(calibration: ExitCalibration, beta: float, variant: str = "mean") -> list[float]:
    """Threshold per early exit for knob `beta`.

    "mean": beta * mean_i (stop when more confident than beta times the exit's usual score).
    "quantile": the beta-quantile of exit i's scores, beta in [0, 1]; 0 always stops at exit 1.
    "conditional": the beta-quantile of exit i's scores over the calibration samples that reach
    exit i (`conditional_quantiles`): each exit passes on a share beta of what reaches it.
    "accuracy": the least score at which exit i is right a share beta of the time on the
    calibration samples (`accuracy_thresholds`).
    For the last three the knob runs from 0 (everyone stops at exit 1: -inf) to 1 (the full
    network: +inf, which no score reaches, not even a max-softmax rounded to 1.0).

    >>> cal = ExitCalibration("max_logit", torch.tensor([2.0, 4.0]), torch.zeros(2, 1001), 10)
    >>> calibrated_thresholds(cal, 1.5)
    [3.0, 6.0]
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not isinstance(beta, (int, float)) or beta != beta:
        raise ConfigError(f"beta must be a number, got {beta!r}")
    if variant == "mean":
        if beta < 0:
            raise ConfigError(f"beta must be >= 0 for the mean variant, got {beta}")
        if bool((calibration.means <= 0).any()):
            raise ConfigError(
                f"the mean variant needs positive mean scores, got {calibration.means.tolist()} for "
                f"score {calibration.score!r}; use the quantile variant or another score"
            )
        return [float(beta * m) for m in calibration.means]
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta must be in [0, 1] for the {variant} variant, got {beta}")
    q = {"quantile": calibration.quantiles, "conditional": calibration.conditional}.get(
        variant, calibration.accuracy
    )
    if q is None:
        raise ConfigError(
            f"this calibration has no statistics for the {variant} variant (made by an older bofexits, "
            "or without labels); use --variant quantile or mean, or retrain"
        )
    if beta == 0.0:
        return [float("-inf")] * q.shape[0]
    if beta == 1.0:  # the full network by definition, whatever a score rounds to (+inf: never stop)
        return [float("inf")] * q.shape[0]
    pos = beta * (_GRID - 1)
    lo = int(pos)
    hi = min(lo + 1, _GRID - 1)
    frac = pos - lo
    return [float(v) for v in q[:, lo] * (1 - frac) + q[:, hi] * frac]


class CalibratedThreshold(ExitPolicy):
    """Stop at exit i when score_i(x) >= threshold_i(beta): one comparison per exit.

    Args:
        calibration: statistics fitted on training (or held-out) data.
        beta: the knob; larger is slower and more accurate.
        variant: "mean", "quantile", "conditional" or "accuracy" (`calibrated_thresholds`).
            The constructor keeps "mean" with beta 1.0 (the original rule) for code written
            against it; `DEFAULT_VARIANT` is what every entry point (`bofexits.sweep`, the
            CLI, the config, `compare`) uses.
    """

    name = "calibrated"

    def __init__(self, calibration: ExitCalibration, beta: float = 1.0, variant: str = "mean") -> None:
        if not isinstance(calibration, ExitCalibration):
            raise ConfigError(f"calibration must be an ExitCalibration, got {type(calibration).__name__}")
        self.thresholds = calibrated_thresholds(calibration, beta, variant)  # checks beta first
        self.calibration = calibration
        self.beta = float(beta)
        self.variant = variant
        self.score = calibration.score

    def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return confidence(logits, self.score) >= self.thresholds[index], state

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        return scalar_confidence(logits, self.score) >= self.thresholds[index], state

    def early_exits(self) -> int | None:
        return len(self.thresholds)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.variant,
            "score": self.score,
            "beta": self.beta,
            "thresholds": self.thresholds,
        }
