"""Policy points and how one is chosen: the knee, the cheapest point reaching an accuracy, and
the most accurate point within a compute level (docs/method.md §6).

A point is one knob value of one policy, measured on the test set: accuracy, counted compute,
where samples left, and (when it was run for real) its wall-clock against the plain backbone.
Every table, plot, claim and benchmark picks points with the functions here, so "the knee"
means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields

__all__ = [
    "LEVELS",
    "MAX_DROP",
    "Point",
    "PointTiming",
    "at_compute",
    "at_levels",
    "cheapest_reaching",
    "knee_point",
    "runtime_efficiency",
]

MAX_DROP = 0.005
"""The knee's tolerance: the cheapest point within this much accuracy (0.5 pp) of the full network."""
LEVELS: tuple[float, ...] = (0.25, 0.4, 0.5, 0.75)
"""Compute levels (fractions of the backbone's MACs) at which policies are compared (matched compute)."""

_ACC_EPS = 1e-12  # accuracies are means over the same test set: equal ones may differ by rounding
_MACS_EPS = 1e-9


class Scored(Protocol):
    """Anything with an accuracy and a compute fraction (a `Point`, a benchmark summary, ...)."""

    @property
    def accuracy(self) -> float: ...

    @property
    def relative_macs(self) -> float: ...


P = TypeVar("P", bound=Scored)


def cheapest_reaching(points: Sequence[P], accuracy: float) -> P | None:
    """The cheapest point whose accuracy is at least `accuracy` (None if none is).

    On ties in compute the first such point wins (grids are ordered fastest first).

    >>> pts = [Point(0.80, 3.0, 0.3, [1.0], 0.0), Point(0.85, 4.5, 0.45, [1.0], 0.0)]
    >>> cheapest_reaching(pts, 0.84).relative_macs, cheapest_reaching(pts, 0.9)
    (0.45, None)
    """
    ok = [p for p in points if p.accuracy >= accuracy - _ACC_EPS]
    return min(ok, key=lambda p: p.relative_macs) if ok else None


def knee_point(points: Sequence[P], full_accuracy: float, max_drop: float = MAX_DROP) -> P | None:
    """The knee: the cheapest point within `max_drop` of the full network's accuracy (None if none is).

    >>> pts = [Point(0.80, 3.0, 0.3, [1.0], 0.0), Point(0.898, 5.0, 0.5, [1.0], 0.0)]
    >>> knee_point(pts, 0.9).relative_macs
    0.5
    """
    return cheapest_reaching(points, full_accuracy - max_drop)


def at_compute(points: Sequence[P], level: float) -> P | None:
    """The most accurate point using at most `level` of the backbone's MACs (None if none does).

    On ties in accuracy the cheaper point wins.

    >>> pts = [Point(0.8, 3.0, 0.3, [1.0], 0.0), Point(0.9, 6.0, 0.6, [1.0], 0.0)]
    >>> at_compute(pts, 0.5).accuracy, at_compute(pts, 0.2)
    (0.8, None)
    """
    ok = [p for p in points if p.relative_macs <= level + _MACS_EPS]
    return max(ok, key=lambda p: (p.accuracy, -p.relative_macs)) if ok else None


def at_levels(points: Sequence[P], levels: Sequence[float] = LEVELS) -> dict[float, P | None]:
    """`at_compute` at every level: matched compute, the comparison across policies.

    >>> at_levels([Point(0.8, 3.0, 0.3, [1.0], 0.0)], (0.25, 0.5))[0.25] is None
    True
    """
    return {lv: at_compute(points, lv) for lv in levels}


def runtime_efficiency(measured_speedup: float, relative_macs: float) -> float:
    """Measured speedup / compute speedup, the compute speedup being 1 / `relative_macs`.

    1.0 means every MAC saved became time saved; below 1, fixed per-operator costs (exit heads,
    decisions, compaction) or slow-per-MAC early stages ate part of it.

    >>> runtime_efficiency(1.8, 0.5)
    0.9
    """
    return measured_speedup * relative_macs


@dataclass
class PointTiming:
    """Wall-clock of one point run for real, against the plain backbone timed in the same rounds.

    Raw milliseconds drift between minutes on shared CPUs; the speedups (same-round ratios)
    are what compare across runs (docs/method.md §7).

    Attributes:
        batch1_ms: batch-1 ms per image, median over rounds of each round's mean.
        batch1_speedup: the backbone's mean time per image / this point's, at batch 1, over
            every call of every interleaved round (`Timing.mean_speedup`: mean-based, because
            adaptive latency is multimodal and a median can flip a conclusion).
        batched_ms: the same in batches (shrinking as samples exit), ms per image.
        batched_speedup: the same mean-based ratio in batches.
        batch1_mean_ms: mean batch-1 ms per image over every call of every round.
        batch1_p50_ms: median of the batch-1 call times (ms).
        batch1_p95_ms: 95th percentile of the batch-1 call times (ms).
        batch1_p99_ms: 99th percentile of the batch-1 call times (ms).
        batched_mean_ms: mean ms per image over every batched call of every round.
        batch1_speedup_low, batch1_speedup_high: the 95% bootstrap interval of `batch1_speedup`
            over rounds and images (`bofexits.evaluation.speedup.ratio_interval`); None in
            results written before intervals were kept.
        batched_speedup_low, batched_speedup_high: the same for `batched_speedup`.
    """

    batch1_ms: float
    batch1_speedup: float
    batched_ms: float
    batched_speedup: float
    batch1_mean_ms: float
    batch1_p50_ms: float
    batch1_p95_ms: float
    batch1_p99_ms: float
    batched_mean_ms: float
    batch1_speedup_low: float | None = None
    batch1_speedup_high: float | None = None
    batched_speedup_low: float | None = None
    batched_speedup_high: float | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def batched_images_per_s(self) -> float:
        """Batched throughput, from `batched_ms`."""
        return 1e3 / self.batched_ms

    def to_dict(self) -> dict[str, Any]:
        return {**to_fields(self), "batched_images_per_s": self.batched_images_per_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointTiming:
        return from_fields(cls, data, "point timing")


@dataclass
class Point:
    """One knob value of one policy on the test set.

    Attributes:
        accuracy: top-1 accuracy in [0, 1].
        mean_macs: mean MACs per sample of what ran (stages and exits up to the exit taken).
        relative_macs: `mean_macs` / the plain backbone's MACs.
        exit_fractions: (S,) share of samples leaving at each exit.
        balance: normalised entropy of `exit_fractions` (1 = uniform, 0 = one exit).
        knob: what `value` is (`beta`, `threshold`, `patience`, `budget`, `exit`); None for
            points of no policy (the oracle).
        value: the knob value.
        index: position in the policy's knob grid (policy comparisons).
        thresholds: the per-exit thresholds the value resolved to (calibrated-rule sweeps).
        timing: wall-clock, when the point was run for real and timed.
    """

    accuracy: float
    mean_macs: float
    relative_macs: float
    exit_fractions: list[float]
    balance: float
    knob: str | None = None
    value: float | None = None
    index: int | None = None
    thresholds: list[float] | None = None
    timing: PointTiming | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def compute_speedup(self) -> float:
        """Backbone MACs / mean MACs of what ran: the speedup if every MAC saved were time saved."""
        return 1.0 / self.relative_macs if self.relative_macs > 0 else math.inf

    @property
    def batch1_efficiency(self) -> float:
        """Runtime efficiency at batch 1: measured speedup / compute speedup (1.0: all MACs saved became time).

        NaN without timing.
        """
        return runtime_efficiency(self.timing.batch1_speedup, self.relative_macs) if self.timing else math.nan

    @property
    def batched_efficiency(self) -> float:
        """Runtime efficiency in batches; NaN without timing."""
        return (
            runtime_efficiency(self.timing.batched_speedup, self.relative_macs) if self.timing else math.nan
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the knob value under the knob's own name (`{"beta": 0.4, ...}`)."""
        out: dict[str, Any] = {}
        if self.index is not None:
            out["index"] = self.index
        if self.knob is not None:
            out.update(knob=self.knob, **{self.knob: self.value})
        out.update(
            accuracy=self.accuracy,
            mean_macs=self.mean_macs,
            relative_macs=self.relative_macs,
            exit_fractions=list(self.exit_fractions),
            balance=self.balance,
        )
        if self.thresholds is not None:
            out["thresholds"] = list(self.thresholds)
        out["compute_speedup"] = self.compute_speedup
        if self.timing is not None:
            out["timing"] = self.timing.to_dict()
            out.update(batch1_efficiency=self.batch1_efficiency, batched_efficiency=self.batched_efficiency)
        out["schema_version"] = self.schema_version
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Point:
        check_schema(data, "point")
        require(data, "point", "accuracy", "mean_macs", "relative_macs", "exit_fractions", "balance")
        knob = data.get("knob")
        if knob is not None:
            require(data, "point", knob)
        thresholds = data.get("thresholds")
        timing = data.get("timing")
        return cls(
            accuracy=data["accuracy"],
            mean_macs=data["mean_macs"],
            relative_macs=data["relative_macs"],
            exit_fractions=list(data["exit_fractions"]),
            balance=data["balance"],
            knob=knob,
            value=None if knob is None else data[knob],
            index=data.get("index"),
            thresholds=None if thresholds is None else [float(t) for t in thresholds],  # "inf" -> inf
            timing=None if timing is None else PointTiming.from_dict(timing),
        )
