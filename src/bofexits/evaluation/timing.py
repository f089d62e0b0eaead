"""Wall-clock measurement. Timing drifts up to 2x between minutes on shared CPUs, so
configurations are always interleaved (A B A B ...) and compared as per-round ratios."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Timing", "cpu_model", "interleaved_timing", "platform_info"]


@dataclass
class Timing:
    """Per-sample seconds of each configuration per round, and ratios to a reference."""

    rounds: dict[str, list[float]]
    reference: str

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def speedup(self, name: str) -> float:
        """Median over rounds of reference_time / name_time (same-round pairs)."""
        pairs = zip(self.rounds[self.reference], self.rounds[name], strict=True)
        return statistics.median(r / t for r, t in pairs)


@torch.inference_mode()
def interleaved_timing(
    runs: dict[str, Callable[[torch.Tensor], object]],
    batches: Sequence[torch.Tensor],
    *,
    reference: str,
    rounds: int = 5,
    warmup: int = 1,
) -> Timing:
    """Time each callable over all `batches`, interleaving configurations within each round.

    Args:
        runs: name -> callable applied to one batch.
        batches: inputs (e.g. 500 single images for batch-1 latency).
        reference: the name ratios are taken against (the plain backbone).
        rounds: repetitions; the order of configurations rotates every round.
        warmup: untimed passes over the first batches per configuration.

    Returns:
        Per-sample seconds per round per configuration.
    """
    if reference not in runs:
        raise ValueError(f"reference {reference!r} is not among {list(runs)}")
    samples = sum(int(b.shape[0]) for b in batches)
    names = list(runs)
    for name in names:
        for b in batches[: max(1, min(len(batches), 20 * warmup))]:
            runs[name](b)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = runs[name]
            t0 = time.perf_counter()
            for b in batches:
                fn(b)
            out[name].append((time.perf_counter() - t0) / samples)
    return Timing(out, reference)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_info() -> dict[str, Any]:
    """Where timings were taken: CPU model, cores, torch version and threads (reported beside every speedup)."""
    return {
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
