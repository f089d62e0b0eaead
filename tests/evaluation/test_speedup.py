"""Speedups that noise cannot flip: bootstrap intervals over rounds and images, the efficiency bound,
re-measurement and refusal, and speed claims that tie inside the noise."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
import torch

from bofexits.evaluation.speedup import MAX_EFFICIENCY, SpeedInterval, plausible, ratio_interval
from bofexits.evaluation.timed import TimingImages, time_checked
from bofexits.evaluation.timing import Timing


def _timing(plain: list[list[float]], fast: list[list[float]]) -> Timing:
    """A Timing from (rounds, calls) seconds of a plain backbone and a runtime, one image per call."""
    rounds = {"plain": [sum(r) / len(r) for r in plain], "fast": [sum(r) / len(r) for r in fast]}
    calls = {"plain": [t for r in plain for t in r], "fast": [t for r in fast for t in r]}
    return Timing(rounds, "plain", calls, [1] * len(plain[0]))


def test_interval_is_tight_when_rounds_agree_and_wide_when_one_stalls() -> None:
    gen = torch.Generator().manual_seed(0)
    noise = (1 + 0.05 * torch.rand(5, 200, generator=gen)).tolist()
    steady = _timing([[2.0 * n for n in r] for r in noise], [[1.0 * n for n in reversed(r)] for r in noise])
    iv = ratio_interval(steady, "plain", "fast")
    assert iv.estimate == pytest.approx(2.0, rel=0.02) and iv.verdict == "faster"
    assert iv.high - iv.low < 0.05
    stalled_plain = [[2.0 * n * (40 if k == 3 else 1) for n in r] for k, r in enumerate(noise)]
    stalled = _timing(stalled_plain, [[1.0 * n for n in r] for r in noise])
    iv = ratio_interval(stalled, "plain", "fast")
    assert iv.estimate > 9  # the ratio of means alone reads one stalled round as a 9x speedup ...
    assert iv.low < 2.2 and iv.high > 30  # ... the interval says how little that is worth


def test_a_difference_inside_the_noise_is_a_tie() -> None:
    gen = torch.Generator().manual_seed(1)
    a = (1 + 0.3 * torch.rand(3, 50, generator=gen)).tolist()
    b = (1.01 + 0.3 * torch.rand(3, 50, generator=gen)).tolist()
    assert ratio_interval(_timing(a, b), "plain", "fast").verdict == "tie"
    assert SpeedInterval(0.8, 0.7, 0.9).verdict == "slower"
    assert SpeedInterval.from_dict(SpeedInterval(1.2, 1.1, 1.3).to_dict()) == SpeedInterval(1.2, 1.1, 1.3)


@pytest.mark.parametrize(
    ("speedup", "relative", "ok"),
    [(1.6, 0.41, True), (46.52, 0.5, False), (17.58, 0.5, False), (2.7, 0.4, True), (math.nan, 0.5, False)],
)
def test_plausible(speedup: float, relative: float, ok: bool) -> None:
    # Figures from issue 20: 46.52x and 17.58x at ~50% of the MACs were printed as results.
    assert plausible(speedup, relative) is ok
    assert MAX_EFFICIENCY == 1.1


class _Stub:
    """Stands in for an AdaptiveRuntime: `run_single`/`run_batched` sleep `seconds` per call."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run_single(self, x: Any) -> None:
        time.sleep(self.seconds)

    run_batched = run_single


def _images(n: int) -> TimingImages:
    return TimingImages([torch.zeros(1, 1)] * n, [torch.zeros(2, 1)] * 2, 2)


def test_an_implausible_timing_is_measured_again_then_refused() -> None:
    calls = {"plain": 0}

    def plain(x: Any) -> None:  # stalls on every call: the "adaptive" path looks 20x faster
        calls["plain"] += 1
        time.sleep(0.002)

    runtimes: Any = {"fast": _Stub(0.0001), "fair": _Stub(0.0015)}
    timed, refused = time_checked(plain, runtimes, _images(4), 1, {"fast": 0.5, "fair": 0.5}, retries=1)
    assert set(refused) == {"fast"} and "efficiency" in refused["fast"] and "not a result" in refused["fast"]
    assert calls["plain"] >= 2 * (4 + 2)  # timed twice: once, and once more (plus warm-up calls)
    assert "fair" in timed.batch1.rounds


def test_a_plausible_timing_is_measured_once() -> None:
    runtimes: Any = {"a": _Stub(0.0015)}
    timed, refused = time_checked(lambda x: time.sleep(0.002), runtimes, _images(3), 1, {"a": 0.5})
    assert refused == {} and timed.batch1.mean_speedup("a") < 1.1 / 0.5
