"""How sure a measured speedup is: a bootstrap interval over rounds and images, and a plausibility bound.

A speedup is a ratio of two mean times per image taken in the same interleaved rounds on the
same images (`bofexits.evaluation.timing`). On a shared machine one stalled round of the plain
backbone can multiply it: a "46x" at half the MACs was once printed and then used in a claim.
Two guards follow from that:

* `ratio_interval` resamples the rounds and, within them, the timed calls (images at batch 1),
  paired across the two configurations, so the interval widens exactly when rounds disagree;
  two rules timed in the same rounds are compared the same way, and a difference whose interval
  holds 1 is a tie, as it is for accuracy (`bofexits.evaluation.significance`).
* `plausible` refuses a runtime efficiency above `MAX_EFFICIENCY`: skipping work cannot save more
  time than the compute it skips, beyond noise, so such a figure is a measurement fault to be
  re-measured, never a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bofexits.evaluation.schema import SCHEMA_VERSION, from_fields, to_fields
from bofexits.evaluation.significance import CONFIDENCE, SEED
from bofexits.evaluation.timing import Timing

__all__ = ["MAX_EFFICIENCY", "SPEED_RESAMPLES", "SpeedInterval", "plausible", "ratio_interval"]

MAX_EFFICIENCY = 1.1
"""The highest runtime efficiency (speedup / compute speedup) accepted as a measurement."""
SPEED_RESAMPLES = 1000
"""Bootstrap resamples of a timing: the interval's ends move by about 1% between seeds."""

SpeedVerdict = Literal["faster", "tie", "slower"]
_CHUNK = 100  # resamples drawn at once: (100, rounds, calls) indices stay a few MB at 500 images


@dataclass
class SpeedInterval:
    """mean time of `slow` / mean time of `fast`, with its paired bootstrap interval.

    With `slow` the plain backbone and `fast` a runtime, `estimate` is that runtime's speedup.

    Attributes:
        estimate: the ratio of the mean times per image over every call of every round.
        low, high: the percentile bootstrap interval of the ratio at `confidence`.
        confidence: the interval's coverage.
        resamples: bootstrap resamples (rounds, then calls within the drawn rounds).
        seed: the resampling seed.
    """

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    resamples: int = SPEED_RESAMPLES
    seed: int = SEED
    schema_version: int = SCHEMA_VERSION

    @property
    def verdict(self) -> SpeedVerdict:
        """'faster' when the whole interval is above 1, 'slower' when below, else 'tie'.

        >>> SpeedInterval(1.2, 1.05, 1.3, 0.95).verdict, SpeedInterval(1.2, 0.9, 1.3, 0.95).verdict
        ('faster', 'tie')
        """
        return "faster" if self.low > 1 else "slower" if self.high < 1 else "tie"

    def to_dict(self) -> dict[str, Any]:
        return {**to_fields(self), "verdict": self.verdict}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeedInterval:
        return from_fields(cls, data, "speed interval")


def _per_round(timing: Timing, name: str) -> np.ndarray:
    """(rounds, calls) seconds of every call of `name`."""
    calls = np.asarray(timing.calls[name], dtype=np.float64)
    return calls.reshape(len(timing.rounds[name]), len(timing.call_sizes))


def ratio_interval(
    timing: Timing,
    slow: str,
    fast: str,
    *,
    resamples: int = SPEED_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> SpeedInterval:
    """How many times faster `fast` ran than `slow` in `timing`, with a paired bootstrap interval.

    Each resample draws rounds with replacement, then calls (the same images for both sides)
    with replacement, and takes the ratio of the two total times: the images per call are the
    same on both sides, so that is the ratio of the mean times per image.

    >>> t = Timing({"a": [2.0, 2.0], "b": [1.0, 1.0]}, "a", {"a": [2.0, 2.0, 2.0, 2.0],
    ...     "b": [1.0, 1.0, 1.0, 1.0]}, [1, 1])
    >>> iv = ratio_interval(t, "a", "b", resamples=50)
    >>> iv.estimate, iv.low, iv.high, iv.verdict
    (2.0, 2.0, 2.0, 'faster')
    """
    a, b = _per_round(timing, slow), _per_round(timing, fast)
    estimate = float(a.sum() / b.sum())
    rounds, calls = a.shape
    if rounds == 0 or calls == 0 or not math.isfinite(estimate):
        return SpeedInterval(estimate, math.nan, math.nan, confidence, 0, seed)
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, resamples, _CHUNK):
        n = min(_CHUNK, resamples - start)
        rr = rng.integers(0, rounds, (n, rounds, 1))
        cc = rng.integers(0, calls, (n, 1, calls))
        ratios.append(a[rr, cc].sum(axis=(1, 2)) / b[rr, cc].sum(axis=(1, 2)))
    drawn = np.concatenate(ratios)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(drawn, [tail, 100 - tail])
    return SpeedInterval(estimate, float(low), float(high), confidence, resamples, seed)


def plausible(speedup: float, relative_macs: float, max_efficiency: float = MAX_EFFICIENCY) -> bool:
    """Whether a measured speedup is possible for a point that ran `relative_macs` of the backbone's MACs.

    >>> plausible(1.6, 0.41), plausible(46.5, 0.5), plausible(1.0, 1.0)
    (True, False, True)
    """
    if not (math.isfinite(speedup) and relative_macs > 0):
        return False
    return speedup * relative_macs <= max_efficiency
