"""Runtimes timed against the plain backbone: at batch 1 and in batches, interleaved, same images.

The one way every evaluation (the knob sweep, the policy comparison) measures wall-clock:
the plain backbone (the same folded stages the runtimes run, docs/method.md §8) is timed in
the same rounds as the runtimes, in rotated order, so speedups are same-round ratios that
survive the drift of shared CPUs (docs/method.md §7). On a GPU the images are moved there once,
before timing, and every clock reading waits for the GPU (`interleaved_timing`).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch

from bofexits.data import ImageDataset
from bofexits.devices import describe_device
from bofexits.errors import ConfigError
from bofexits.evaluation.points import PointTiming
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, require
from bofexits.evaluation.speedup import MAX_EFFICIENCY, SpeedInterval, plausible, ratio_interval
from bofexits.evaluation.timing import Timing, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime

__all__ = [
    "MEASURE_RETRIES",
    "REFERENCE",
    "TimedRuns",
    "TimingImages",
    "TimingSummary",
    "remeasured",
    "time_checked",
    "time_runtimes",
    "timing_images",
]

log = logging.getLogger(__name__)

REFERENCE = "backbone"
"""The name the plain backbone is timed under; every speedup is relative to it."""
MEASURE_RETRIES = 2
"""Re-measurements of a timing in which some runtime's efficiency is implausible, before refusing it."""
R = TypeVar("R")


@dataclass
class TimingImages:
    """The images every configuration is timed on.

    Attributes:
        singles: N (1, C, H, W) images for batch-1 latency.
        batches: (B, C, H, W) batches (the last may be smaller) for throughput.
        batch_size: B.
    """

    singles: list[torch.Tensor]
    batches: list[torch.Tensor]
    batch_size: int

    @property
    def batched_samples(self) -> int:
        return sum(int(b.shape[0]) for b in self.batches)

    @property
    def device(self) -> torch.device:
        """Where the images are (the CPU when there are none)."""
        first = next(iter(self.singles or self.batches), None)
        return first.device if first is not None else torch.device("cpu")

    def to(self, device: torch.device | str) -> TimingImages:
        """The same images on `device` (this object itself when they are there already)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return TimingImages(
            [x.to(device) for x in self.singles], [x.to(device) for x in self.batches], self.batch_size
        )


def timing_images(
    data: ImageDataset,
    samples: int,
    batch_size: int,
    batches: int,
    *,
    device: torch.device | str | None = None,
) -> TimingImages:
    """The first `samples` images one by one, and the first `batch_size * batches` in batches.

    Both sets start at the first test image, so batch-1 and batched timings see the same images.
    `device` (None: where the data is, the CPU) is where they are put, once, so that no timed
    call pays for a copy.
    """
    n = min(samples, len(data))
    nb = min(len(data), batch_size * batches)
    total = max(n, nb)
    x, _ = next(data.subset(torch.arange(total)).batches(total, shuffle=False))
    if device is not None:
        x = x.to(device)
    return TimingImages(
        [x[i : i + 1] for i in range(n)],
        [x[i : i + batch_size] for i in range(0, nb, batch_size)],
        batch_size,
    )


@dataclass
class TimedRuns:
    """Batch-1 and batched timings of some runtimes and the plain backbone, taken in the same rounds."""

    batch1: Timing
    batched: Timing

    def point(self, name: str) -> PointTiming:
        """What a point's tables need from the timings of runtime `name`."""
        one, many = self.batch1, self.batched
        iv1, ivb = ratio_interval(one, one.reference, name), ratio_interval(many, many.reference, name)
        return PointTiming(
            batch1_ms=one.median(name) * 1e3,
            batch1_speedup=one.mean_speedup(name),
            batched_ms=many.median(name) * 1e3,
            batched_speedup=many.mean_speedup(name),
            batch1_mean_ms=one.mean(name) * 1e3,
            batch1_p50_ms=one.percentile(name, 50) * 1e3,
            batch1_p95_ms=one.percentile(name, 95) * 1e3,
            batch1_p99_ms=one.percentile(name, 99) * 1e3,
            batched_mean_ms=many.mean(name) * 1e3,
            batch1_speedup_low=iv1.low,
            batch1_speedup_high=iv1.high,
            batched_speedup_low=ivb.low,
            batched_speedup_high=ivb.high,
        )

    def implausible(
        self, relative_macs: Mapping[str, float], max_efficiency: float = MAX_EFFICIENCY
    ) -> dict[str, str]:
        """name -> why, for each runtime whose speedup exceeds what its compute allows (`plausible`)."""
        out = {}
        for name, rel in relative_macs.items():
            for what, timing in (("batch-1", self.batch1), ("batched", self.batched)):
                speedup = timing.mean_speedup(name)
                if not plausible(speedup, rel, max_efficiency):
                    out[name] = (
                        f"{what} speedup {speedup:.2f}x at {100 * rel:.1f}% of the MACs is an efficiency of "
                        f"{speedup * rel:.2f} (> {max_efficiency:g}): a stalled round of the plain backbone, "
                        "not a result"
                    )
                    break
        return out

    def faster(self, slow: str, fast: str) -> SpeedInterval:
        """How many times faster runtime `fast` ran than `slow` at batch 1 (both timed in these rounds)."""
        return ratio_interval(self.batch1, slow, fast)


def time_runtimes(
    plain: Callable[[torch.Tensor], object],
    runtimes: Mapping[str, AdaptiveRuntime],
    images: TimingImages,
    rounds: int,
    *,
    device: torch.device | str | None = None,
) -> TimedRuns:
    """Time every runtime and the plain backbone at batch 1 (`run_single`) and batched (`run_batched`).

    Args:
        plain: the plain backbone (`AdaptiveRuntime.plain`), timed as `REFERENCE`.
        runtimes: name -> runtime; names must differ from `REFERENCE`.
        images: what to time on (`timing_images`).
        rounds: interleaved rounds; the order of configurations rotates every round.
        device: where the runtimes' network is (None: where `images` are); the images are
            moved there before timing, and a CUDA device is synchronised before every clock reading.
    """
    if REFERENCE in runtimes:
        raise ConfigError(f"{REFERENCE!r} is the plain backbone's name; name the runtimes otherwise")
    if device is not None:
        images = images.to(device)
    one = interleaved_timing(
        {REFERENCE: plain, **{k: rt.run_single for k, rt in runtimes.items()}},
        images.singles,
        reference=REFERENCE,
        rounds=rounds,
    )
    many = interleaved_timing(
        {REFERENCE: plain, **{k: rt.run_batched for k, rt in runtimes.items()}},
        images.batches,
        reference=REFERENCE,
        rounds=rounds,
    )
    return TimedRuns(one, many)


def remeasured(
    measure: Callable[[], R], faults: Callable[[R], dict[str, str]], retries: int = MEASURE_RETRIES
) -> tuple[R, dict[str, str]]:
    """`measure()`, taken again (at most `retries` times) while `faults` finds implausible figures in it.

    Returns the last measurement and what is still at fault in it (name -> why), which the
    caller refuses: such figures must not be printed as results.
    """
    result = measure()
    for attempt in range(retries):
        found = faults(result)
        if not found:
            return result, {}
        log.warning("measuring again (%d of %d): %s", attempt + 1, retries, "; ".join(found.values()))
        result = measure()
    found = faults(result)
    for name, why in found.items():
        log.warning("timing of %s refused: %s", name, why)
    return result, found


def time_checked(
    plain: Callable[[torch.Tensor], object],
    runtimes: Mapping[str, AdaptiveRuntime],
    images: TimingImages,
    rounds: int,
    relative_macs: Mapping[str, float],
    *,
    retries: int = MEASURE_RETRIES,
    max_efficiency: float = MAX_EFFICIENCY,
) -> tuple[TimedRuns, dict[str, str]]:
    """`time_runtimes`, measured again while a runtime's efficiency is implausible (`remeasured`).

    Every runtime is re-timed together (the rounds stay shared, so contrasts between rules keep
    their pairing). Whatever is still implausible after `retries` re-measurements is returned as
    refused (name -> why). `max_efficiency` is the bound; the premise behind it (time follows
    MACs within 10%) holds where compute dominates a network's time, not for toy networks whose
    time is per-operation overhead (tests pass `math.inf`).
    """
    return remeasured(
        lambda: time_runtimes(plain, runtimes, images, rounds),
        lambda timed: timed.implausible(relative_macs, max_efficiency),
        retries,
    )


S = TypeVar("S", bound="TimingSummary")


@dataclass
class TimingSummary:
    """How a run was timed, and the plain backbone's time in it.

    Attributes:
        threads: torch intra-op threads.
        batch1_samples: images timed one by one.
        batched_size: batch size of the batched timing.
        batched_samples: images timed in batches.
        rounds: interleaved rounds.
        backbone_batch1_ms: the plain backbone's batch-1 ms per image (median over rounds; with
            several timing sessions, the median of theirs).
        backbone_batched_ms: the same in batches, ms per image.
        device: what the network ran on: "cpu", or the GPU's name (`describe_device`). Results
            written before GPUs were supported lack it, and were timed on the CPU.
        refused: point -> why its timing was refused as a measurement fault (`time_checked`);
            such a point keeps no timing.
    """

    threads: int
    batch1_samples: int
    batched_size: int
    batched_samples: int
    rounds: int
    backbone_batch1_ms: float
    backbone_batched_ms: float
    device: str = "cpu"
    refused: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def of(cls: type[S], sessions: Sequence[TimedRuns], images: TimingImages, rounds: int, **extra: Any) -> S:
        """The summary of one or more timing sessions on `images` (`extra`: a subclass's fields)."""
        return cls(
            threads=torch.get_num_threads(),
            batch1_samples=len(images.singles),
            batched_size=images.batch_size,
            batched_samples=images.batched_samples,
            rounds=rounds,
            backbone_batch1_ms=statistics.median(s.batch1.median(REFERENCE) for s in sessions) * 1e3,
            backbone_batched_ms=statistics.median(s.batched.median(REFERENCE) for s in sessions) * 1e3,
            device=describe_device(images.device),
            **extra,
        )

    @property
    def on_gpu(self) -> bool:
        """Whether the timings were taken on a GPU (then CPU threads do not matter)."""
        return self.device != "cpu"

    @property
    def backbone_batched_images_per_s(self) -> float:
        return 1e3 / self.backbone_batched_ms

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(TimingSummary)}
        return {**out, "backbone_batched_images_per_s": self.backbone_batched_images_per_s}

    @classmethod
    def _base_fields(cls, data: Mapping[str, Any], kind: str) -> dict[str, Any]:
        check_schema(data, kind)
        optional = ("schema_version", "device", "refused")
        names = [f.name for f in fields(TimingSummary) if f.name not in optional]
        require(data, kind, *names)
        # Older results: no device (timed on the CPU), nothing refused.
        return {
            **{n: data[n] for n in names},
            "device": data.get("device", "cpu"),
            "refused": data.get("refused", {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimingSummary:
        return TimingSummary(**cls._base_fields(data, "timing summary"))
