"""Confidence-threshold baselines: one fixed threshold shared by every exit.

- `GlobalThreshold`: SDN, Kaya et al. 2019, "Shallow-Deep Networks: Understanding and
  Mitigating Network Overthinking" (ICML): stop at the first exit whose maximum softmax
  probability reaches one global threshold.
- `EntropyThreshold`: BranchyNet, Teerapittayanon et al. 2016, "BranchyNet: Fast Inference
  via Early Exiting from Deep Neural Networks" (ICPR): stop when the softmax entropy is at
  most the threshold (smaller entropy = more confident).

Both are `ScoreThreshold`s, the shared rule "stop at exit i when score_i(x) >= threshold_i",
which `BudgetedThreshold` (MSDNet) reuses with one threshold per exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bofexits.errors import ConfigError
from bofexits.policies.base import ExitPolicy
from bofexits.policies.scores import SCORES, confidence, scalar_confidence

__all__ = ["EntropyThreshold", "GlobalThreshold", "ScoreThreshold", "check_score", "check_threshold"]

# Ranges a threshold can usefully take for each score (anything outside never or always stops).
_RANGES: dict[str, tuple[float, float]] = {
    "max_logit": (-math.inf, math.inf),
    "max_prob": (0.0, 1.0),
    "margin": (0.0, 1.0),
    "neg_entropy": (-math.inf, 0.0),
}


def check_score(score: str) -> str:
    """Return `score` if it names a confidence score, else raise `ConfigError`.

    >>> check_score("margin")
    'margin'
    """
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
    return score


def check_threshold(value: Any, low: float, high: float, what: str = "threshold") -> float:
    """`value` as a float if it is a real number in [low, high] (infinite ends allowed), else `ConfigError`.

    >>> check_threshold(0.5, 0.0, 1.0)
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{what} must be a number in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{what} must be in [{low}, {high}], got {value}")
    return float(value)


class ScoreThreshold(ExitPolicy):
    """Stop at exit i when score_i(x) >= thresholds[i]: one comparison per exit.

    Args:
        thresholds: one threshold per early exit (S-1 values); -inf always stops, +inf never.
        score: confidence score (`bofexits.policies.scores.SCORES`), larger = more confident.

    >>> policy = ScoreThreshold([2.0, 1.0], "max_logit")
    >>> policy.stop(0, torch.tensor([[2.0, 0.0], [1.5, 0.0]]), None)[0].tolist()
    [True, False]
    """

    name = "score-threshold"

    def __init__(self, thresholds: Sequence[float], score: str = "max_prob") -> None:
        if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Sequence):
            raise ConfigError(f"thresholds must be a list of numbers, one per early exit, got {thresholds!r}")
        self.score = check_score(score)
        self.thresholds = [check_threshold(t, -math.inf, math.inf) for t in thresholds]

    def threshold_at(self, index: int) -> float:
        """Threshold of early exit `index` (0-based)."""
        if index >= len(self.thresholds):
            raise ConfigError(
                f"{type(self).__name__} has {len(self.thresholds)} thresholds but was asked at exit {index}; "
                "give one per early exit of this network"
            )
        return self.thresholds[index]

    def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """(B,) bool mask score >= threshold for `logits` (B, classes) at exit `index`."""
        return confidence(logits, self.score) >= self.threshold_at(index), state

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        """Batch-1 decision for `logits` (1, classes) as a Python bool; raises on NaN or inf."""
        return scalar_confidence(logits, self.score) >= self.threshold_at(index), state

    def early_exits(self) -> int | None:
        # Global rules (max-softmax, entropy) keep no list: one threshold fits any network.
        return len(self.thresholds) if self.thresholds else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "thresholds": list(self.thresholds)}


class GlobalThreshold(ScoreThreshold):
    """SDN (Kaya et al. 2019): stop at the first exit whose confidence reaches one global threshold.

    Args:
        threshold: the knob, shared by all exits; larger is slower and more accurate. For
            "max_prob" and "margin" it lies in [0, 1], for "neg_entropy" in (-inf, 0].
        score: confidence score; SDN uses the maximum softmax probability ("max_prob").

    >>> GlobalThreshold(0.7).stop(3, torch.tensor([[2.0, 0.0], [0.5, 0.0]]), None)[0].tolist()
    [True, False]
    """

    name = "max-softmax"

    def __init__(self, threshold: float, score: str = "max_prob") -> None:
        low, high = _RANGES[check_score(score)]
        self.threshold = check_threshold(threshold, low, high, f"threshold for score {score!r}")
        super().__init__([], score)

    def threshold_at(self, index: int) -> float:
        return self.threshold

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "threshold": self.threshold}


class EntropyThreshold(ScoreThreshold):
    """BranchyNet (Teerapittayanon et al. 2016): stop when the softmax entropy <= threshold.

    Smaller entropy means more confident, so a larger threshold stops more samples early
    (faster, less accurate), the opposite direction to `GlobalThreshold`'s knob. Implemented
    as neg_entropy >= -threshold, which is the same comparison exactly (negation is exact).

    Args:
        threshold: entropy in nats, >= 0 (log(classes) or more stops everything at exit 1).

    >>> policy = EntropyThreshold(0.5)  # [ln 9, 0] has entropy 0.325, [0, 0] has ln 2 = 0.693
    >>> policy.stop(0, torch.tensor([[math.log(9), 0.0], [0.0, 0.0]]), None)[0].tolist()
    [True, False]
    """

    name = "entropy"

    def __init__(self, threshold: float) -> None:
        self.threshold = check_threshold(threshold, 0.0, math.inf, "entropy threshold")
        super().__init__([], "neg_entropy")

    def threshold_at(self, index: int) -> float:
        return -self.threshold

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold}
