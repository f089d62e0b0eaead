"""The knob turned by the load: lower beta when queueing threatens the latency target, raise it after.

A lower beta stops more samples at earlier exits, so each request costs less and the server
answers more per second, for some accuracy. `SloController` watches two signals every
`period_s`: the p95 latency of the requests answered in the last `window_s`, and how long the
oldest queued sample has waited (the early warning: it grows before answers come out late).
Under pressure (p95 above `high` x SLO, or the oldest wait above half the SLO) it cuts the
level multiplicatively; when calm (p95 below `low` x SLO and the queues short) it raises it
additively back toward the set point: AIMD, as TCP does with its window, because a cut must
act at once and a recovery must not re-trigger the overload it left. The level in [0, 1]
maps to beta between `beta_min` (0) and the set point (1): evenly in log(1 - beta) for the
variants whose knob lives in [0, 1] (quantile, conditional, accuracy: their useful range is
crowded near 1, as the accuracy rule's sweep grid is), evenly in beta for the mean variant.

Every change is logged with the signal that caused it and the accuracy the calibration
expects at the new beta (`bofexits.serving.stages.expected_accuracy`); `/metrics` carries
beta, the change count and that expected accuracy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bofexits.errors import ConfigError
from bofexits.serving.stages import expected_accuracy

if TYPE_CHECKING:
    from bofexits.serving.engine import Engine

__all__ = ["SloController"]

logger = logging.getLogger(__name__)


@dataclass
class SloController:
    """AIMD control of beta against a p95 latency target (module docstring).

    Attributes:
        slo_s: the p95 latency target, seconds.
        set_point: the beta to serve when load allows (the configured knob).
        beta_min: the lowest beta it may turn to.
        log_scale: move evenly in log(1 - beta) (knobs in [0, 1]) rather than in beta.
        period_s: least time between two changes (effects of a change need that long to show).
        window_s: how far back p95 looks.
        high, low: pressure and calm thresholds, fractions of the SLO.
        cut: multiplicative decrease of the level under pressure.
        rise: additive increase of the level when calm.
    """

    slo_s: float
    set_point: float
    beta_min: float = 0.0
    log_scale: bool = True
    period_s: float = 0.2
    window_s: float = 0.5
    high: float = 0.7
    low: float = 0.4
    cut: float = 0.7
    rise: float = 0.05

    def __post_init__(self) -> None:
        if not self.slo_s > 0:
            raise ConfigError(f"the latency SLO must be > 0 ms, got {1e3 * self.slo_s:g}")
        if not self.beta_min <= self.set_point:
            raise ConfigError(
                f"the lowest beta ({self.beta_min:g}) exceeds the set point ({self.set_point:g})"
            )
        self.level = 1.0
        self._last_change = float("-inf")
        self.trajectory: list[tuple[float, float]] = []

    @property
    def beta(self) -> float:
        if self.log_scale and self.set_point < 1.0:
            lo, hi = math.log1p(-self.beta_min), math.log1p(-self.set_point)
            return float(-math.expm1(lo + self.level * (hi - lo)))
        return self.beta_min + self.level * (self.set_point - self.beta_min)

    def __call__(self, engine: Engine, now: float) -> None:
        """Look at the engine's signals and move beta if due (the engine calls this after each batch)."""
        if now - self._last_change < self.period_s:
            return
        recent = engine.telemetry.recent(since_s=self.window_s)
        p95 = float(np.percentile(recent, 95)) if recent else 0.0
        oldest = engine.oldest_wait_s()
        if p95 > self.high * self.slo_s or oldest > 0.5 * self.slo_s:
            level = self.level * self.cut
            why = f"p95 {1e3 * p95:.1f} ms, oldest wait {1e3 * oldest:.1f} ms against an SLO of {1e3 * self.slo_s:g} ms"
        elif self.level < 1.0 and p95 < self.low * self.slo_s and oldest < 0.2 * self.slo_s:
            level = min(1.0, self.level + self.rise)
            why = f"calm: p95 {1e3 * p95:.1f} ms"
        else:
            return
        if level < 1e-3:
            level = 0.0
        if level == self.level:
            return
        old = self.beta
        self.level, self._last_change = level, now
        engine.set_beta(self.beta)
        self.trajectory.append((now, self.beta))
        del self.trajectory[:-1000]
        acc = expected_accuracy(engine.backend.facts.variant, self.beta)
        logger.info(
            "beta %.4g -> %.4g (%s); expected early-exit accuracy %s",
            old,
            self.beta,
            why,
            "n/a for this rule" if acc is None else f"{100 * acc:.1f}%",
        )
