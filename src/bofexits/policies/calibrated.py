"""The proposed rule: per-exit thresholds calibrated on data, one interpretable knob beta.

Early exits are systematically less confident than late ones, so one global threshold
piles samples up at one end. Calibrating each exit against its own score distribution
(its mean, or its quantiles) makes beta mean the same thing at every exit (METHOD §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import ConfigError, InputError
from .base import NAN_MESSAGE, ExitPolicy
from .scores import SCORES, confidence

__all__ = ["CalibratedThreshold", "ExitCalibration", "Variant", "calibrated_thresholds"]

Variant = Literal["mean", "quantile"]
VARIANTS: tuple[str, ...] = ("mean", "quantile")
_GRID = 1001  # stored quantile levels 0, 0.001, ..., 1


@dataclass
class ExitCalibration:
    """Per-exit statistics of a confidence score over calibration samples.

    Attributes:
        score: which confidence score the statistics describe.
        means: (S-1,) mean score at each early exit.
        quantiles: (S-1, 1001) score quantiles at levels 0, 0.001, ..., 1.
        num_samples: how many samples the statistics come from.
    """

    score: str
    means: torch.Tensor
    quantiles: torch.Tensor
    num_samples: int

    @classmethod
    def fit(cls, exit_logits: Sequence[torch.Tensor], score: str = "max_logit") -> ExitCalibration:
        """Collect statistics from the logits of the early exits, [(N, classes)] * (S-1)."""
        if score not in SCORES:
            raise ConfigError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if not exit_logits or exit_logits[0].shape[0] == 0:
            raise InputError("calibration needs at least one sample at one early exit")
        scores = torch.stack([confidence(logits.float(), score) for logits in exit_logits])  # (S-1, N)
        if not bool(torch.isfinite(scores).all()):
            raise InputError("calibration logits contain NaN or inf; the model weights are broken, retrain")
        levels = torch.linspace(0, 1, _GRID, dtype=torch.float64)
        quantiles = torch.quantile(scores.double(), levels, dim=1).T.float()  # (S-1, GRID)
        return cls(score, scores.mean(1), quantiles, int(scores.shape[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "means": self.means.tolist(),
            "quantiles": self.quantiles.tolist(),
            "num_samples": self.num_samples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitCalibration:
        return cls(
            data["score"], torch.tensor(data["means"]), torch.tensor(data["quantiles"]), data["num_samples"]
        )


def calibrated_thresholds(calibration: ExitCalibration, beta: float, variant: str = "mean") -> list[float]:
    """Threshold per early exit for knob `beta`.

    "mean": beta * mean_i (stop when more confident than beta times the exit's usual score).
    "quantile": the beta-quantile of exit i's scores, beta in [0, 1]; 0 always stops at exit 1.

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
        raise ConfigError(f"beta must be in [0, 1] for the quantile variant, got {beta}")
    if beta == 0.0:
        return [float("-inf")] * calibration.quantiles.shape[0]
    pos = beta * (_GRID - 1)
    lo = int(pos)
    hi = min(lo + 1, _GRID - 1)
    frac = pos - lo
    q = calibration.quantiles
    return [float(v) for v in q[:, lo] * (1 - frac) + q[:, hi] * frac]


class CalibratedThreshold(ExitPolicy):
    """Stop at exit i when score_i(x) >= threshold_i(beta): one comparison per exit.

    Args:
        calibration: statistics fitted on training (or held-out) data.
        beta: the knob; larger is slower and more accurate.
        variant: "mean" or "quantile".
    """

    name = "calibrated"

    def __init__(self, calibration: ExitCalibration, beta: float = 1.0, variant: str = "mean") -> None:
        self.calibration = calibration
        self.beta = float(beta)
        self.variant = variant
        self.score = calibration.score
        self.thresholds = calibrated_thresholds(calibration, beta, variant)

    def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return confidence(logits, self.score) >= self.thresholds[index], state

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        # One reduction and one host read; a NaN score fails `s == s` for free.
        s = confidence(logits, self.score).item()
        if s != s or s in (float("inf"), float("-inf")):
            raise InputError(NAN_MESSAGE)
        return s >= self.thresholds[index], state

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.variant,
            "score": self.score,
            "beta": self.beta,
            "thresholds": self.thresholds,
        }
