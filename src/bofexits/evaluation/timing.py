"""Wall-clock measurement. Timing drifts up to 2x between minutes on shared CPUs, so
configurations are always interleaved (A B A B ...) and compared as per-round ratios
(docs/method.md §7); every call is recorded too, for means and tail percentiles.

On a GPU, kernels run asynchronously: a call returns before its work is done. The clock is
then read only after `torch.cuda.synchronize` (`synchronizer`); on the CPU it is read as is."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bofexits.errors import ConfigError, InputError
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields

__all__ = [
    "Platform",
    "Timing",
    "cpu_model",
    "interleaved_timing",
    "percentile",
    "platform_info",
    "synchronizer",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated between order statistics (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 100)
    (2.5, 4.0)
    """
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ConfigError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Timing:
    """What `interleaved_timing` measured: per round and per call, for each configuration.

    Attributes:
        rounds: name -> seconds per image in each round (the round's total / its images).
        reference: the configuration ratios are taken against (the plain backbone).
        calls: name -> seconds of every call, round after round (empty for old records).
        call_sizes: images in each call (the same inputs for every configuration, every round).
    """

    rounds: dict[str, list[float]]
    reference: str
    calls: dict[str, list[float]] = field(default_factory=dict)
    call_sizes: list[int] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def median(self, name: str) -> float:
        """Median over rounds of the seconds per image."""
        return statistics.median(self.rounds[name])

    def speedup(self, name: str) -> float:
        """Median over rounds of reference_time / name_time (same-round pairs)."""
        pairs = zip(self.rounds[self.reference], self.rounds[name], strict=True)
        return statistics.median(r / t for r, t in pairs)

    def mean_speedup(self, name: str) -> float:
        """reference's mean time per image / name's, over every call of every round.

        The headline ratio (docs/method.md §7): adaptive latency is multimodal (one mode per
        exit), so a ratio of medians can land on either side of a mode boundary; total time
        over total images is what a user's throughput and bill see. Both sides ran in the same
        interleaved rounds on the same images.
        """
        return self.mean(self.reference) / self.mean(name)

    def per_image(self, name: str) -> list[float]:
        """Seconds per image of every call (a call's time / its images)."""
        sizes = self.call_sizes * len(self.rounds[name])
        return [t / n for t, n in zip(self.calls[name], sizes, strict=True)]

    def mean(self, name: str) -> float:
        """Mean seconds per image over every call of every round (total time / total images)."""
        return sum(self.calls[name]) / (sum(self.call_sizes) * len(self.rounds[name]))

    def percentile(self, name: str, q: float) -> float:
        """q-th percentile (0..100) of the seconds per image of single calls (at batch 1: latency)."""
        return percentile(self.per_image(name), q)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "reference": self.reference,
            "calls": self.calls,
            "call_sizes": self.call_sizes,
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timing:
        check_schema(data, "timing")
        require(data, "timing", "rounds", "reference", "calls", "call_sizes")
        return cls(
            {k: list(v) for k, v in data["rounds"].items()},
            data["reference"],
            {k: list(v) for k, v in data["calls"].items()},
            list(data["call_sizes"]),
        )


def _size(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def _inputs_per_run(
    runs: Mapping[str, Callable[[Any], object]], batches: Sequence[Any] | Mapping[str, Sequence[Any]]
) -> tuple[dict[str, Sequence[Any]], list[int]]:
    """Each configuration's inputs, and the images per call (which must agree across configurations)."""
    inputs = {n: batches[n] for n in runs} if isinstance(batches, Mapping) else {n: batches for n in runs}
    sizes = {n: [_size(b) for b in xs] for n, xs in inputs.items()}
    first = next(iter(sizes.values()))
    if any(s != first for s in sizes.values()):
        raise InputError("every configuration must be timed on the same images (same number per call)")
    return inputs, first


def synchronizer(device: torch.device | str | None) -> Callable[[], None] | None:
    """What to wait on before reading the clock: all of a CUDA device's queued work; None on the CPU.

    CUDA calls return once their kernels are queued, so without the wait a timing would
    measure the queueing, not the work.

    >>> synchronizer("cpu") is None, synchronizer(None) is None, synchronizer("cuda:0") is not None
    (True, True, True)
    """
    if device is None or torch.device(device).type != "cuda":
        return None
    where = torch.device(device)
    return lambda: torch.cuda.synchronize(where)


def _input_device(inputs: Mapping[str, Sequence[Any]]) -> torch.device | None:
    """Where the configurations' first inputs are: a CUDA device if any is on one, else the first
    tensor's device (None: no tensors, e.g. numpy arrays for onnxruntime)."""
    found = [getattr(xs[0], "device", None) for xs in inputs.values() if len(xs)]
    devices = [d for d in found if isinstance(d, torch.device)]
    return next((d for d in devices if d.type == "cuda"), devices[0] if devices else None)


def _clock(sync: Callable[[], None] | None) -> Callable[[], float]:
    """`time.perf_counter` itself without a synchroniser (nothing added on the CPU), else one that waits first."""
    if sync is None:
        return time.perf_counter

    def synced() -> float:
        sync()
        return time.perf_counter()

    return synced


@torch.inference_mode()
def interleaved_timing(
    runs: Mapping[str, Callable[[Any], object]],
    batches: Sequence[Any] | Mapping[str, Sequence[Any]],
    *,
    reference: str,
    rounds: int = 5,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> Timing:
    """Time each callable over all `batches`, interleaving configurations within each round.

    Args:
        runs: name -> callable applied to one batch.
        batches: inputs (e.g. 500 single images for batch-1 latency), shared by every
            configuration, or name -> that configuration's inputs (the same images in another
            form, e.g. numpy arrays for onnxruntime).
        reference: the name ratios are taken against (the plain backbone).
        rounds: repetitions; the order of configurations rotates every round.
        warmup: untimed passes over the first batches per configuration.
        device: where the work runs, for `synchronizer` (a CUDA device is waited on before
            every clock reading); None: the device of the first tensor input.

    Returns:
        Seconds per image per round, and every call's seconds, per configuration.

    >>> t = interleaved_timing({"a": abs, "b": abs}, [torch.ones(2)] * 3, reference="a", rounds=2)
    >>> len(t.rounds["b"]), len(t.calls["b"]), t.call_sizes
    (2, 6, [2, 2, 2])
    """
    if reference not in runs:
        raise ConfigError(f"reference {reference!r} is not among {list(runs)}; name one of the timed configurations")
    inputs, sizes = _inputs_per_run(runs, batches)
    clock = _clock(synchronizer(device if device is not None else _input_device(inputs)))
    names = list(runs)
    for name in names:
        for b in inputs[name][: max(1, min(len(sizes), 20 * warmup))]:
            runs[name](b)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    calls: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, times = runs[name], []
            for b in inputs[name]:
                t0 = clock()
                fn(b)
                times.append(clock() - t0)
            calls[name] += times
            per_round[name].append(sum(times) / sum(sizes))
    return Timing(per_round, reference, calls, sizes)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class Platform:
    """Where timings were taken; reported beside every speedup.

    Attributes:
        machine: architecture (`x86_64`, `arm64`).
        processor: CPU model name.
        cores: logical CPUs.
        torch: torch version.
        threads: torch intra-op threads at the time.
    """

    machine: str
    processor: str
    cores: int | None
    torch: str
    threads: int
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Platform:
        return from_fields(cls, data, "platform")


def platform_info() -> Platform:
    """This machine: CPU model, cores, torch version and threads."""
    return Platform(
        platform.machine(), cpu_model(), os.cpu_count(), torch.__version__, torch.get_num_threads()
    )
