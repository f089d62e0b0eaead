"""The interleaved timer on a fake clock: what it records per round and per call, the statistics a
Timing gives (mean per image, percentiles against numpy's), its order of runs, and its JSON round trip."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from bofexits.errors import ConfigError, InputError
from bofexits.evaluation import timing as timing_module
from bofexits.evaluation.timing import Platform, Timing, interleaved_timing, percentile, platform_info


class FakeClock:
    """perf_counter that only moves when a timed function says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.log: list[str] = []

    def perf_counter(self) -> float:
        return self.now

    def run(self, name: str, seconds_per_image: float) -> Any:
        def fn(x: Any) -> None:
            self.log.append(name)
            self.now += seconds_per_image * len(x)

        return fn


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(timing_module, "time", SimpleNamespace(perf_counter=c.perf_counter))
    return c


def test_records_rounds_and_every_call(clock: FakeClock) -> None:
    batches = [torch.zeros(2), torch.zeros(2), torch.zeros(1)]  # 5 images in 3 calls
    runs = {"backbone": clock.run("backbone", 2.0), "fast": clock.run("fast", 1.0)}
    t = interleaved_timing(runs, batches, reference="backbone", rounds=3, warmup=0)
    assert t.call_sizes == [2, 2, 1]
    assert t.calls["backbone"] == [4.0, 4.0, 2.0] * 3 and t.calls["fast"] == [2.0, 2.0, 1.0] * 3
    assert t.rounds["fast"] == [1.0, 1.0, 1.0] and t.median("backbone") == 2.0
    assert t.speedup("fast") == 2.0 and t.speedup("backbone") == 1.0
    assert t.mean("fast") == 1.0 and t.per_image("fast") == [1.0] * 9
    assert t.percentile("backbone", 95) == 2.0


def test_order_rotates_every_round(clock: FakeClock) -> None:
    runs = {n: clock.run(n, 1.0) for n in "abc"}
    interleaved_timing(runs, [torch.zeros(1)], reference="a", rounds=3, warmup=0)
    assert clock.log[3:] == list("abcbcacab")  # after one untimed call each


def test_each_run_may_take_its_own_form_of_the_same_images(clock: FakeClock) -> None:
    x = [torch.zeros(3)]
    t = interleaved_timing(
        {"torch": clock.run("torch", 1.0), "numpy": clock.run("numpy", 0.5)},
        {"torch": x, "numpy": [v.numpy() for v in x]},
        reference="torch",
        rounds=1,
        warmup=0,
    )
    assert t.speedup("numpy") == 2.0
    with pytest.raises(InputError, match="same images"):
        interleaved_timing({"a": abs, "b": abs}, {"a": x, "b": [torch.zeros(2)]}, reference="a", rounds=1)
    with pytest.raises(ConfigError, match="reference"):
        interleaved_timing({"a": abs}, x, reference="b")


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        values = rng.exponential(size=n).tolist()
        for q in (0, 12.5, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert np.isnan(percentile([], 50))
    with pytest.raises(ConfigError, match="percentile"):
        percentile([1.0], 101)


def test_mean_per_image_weights_calls_by_their_images() -> None:
    t = Timing({"a": [0.0]}, "a", {"a": [4.0, 1.0]}, [3, 1])  # 5 s over 4 images
    assert t.mean("a") == 1.25 and t.per_image("a") == [4.0 / 3, 1.0]


def test_timing_and_platform_round_trip() -> None:
    t = Timing({"a": [1.0, 2.0]}, "a", {"a": [1.0, 2.0]}, [1])
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    here = platform_info()
    assert isinstance(here, Platform) and Platform.from_dict(here.to_dict()) == here
    with pytest.raises(ConfigError, match="schema_version"):
        Timing.from_dict({k: v for k, v in t.to_dict().items() if k != "schema_version"})


class _OnGpu:
    """A batch that says it is on a CUDA device (no GPU needed): what the timer reads to decide to wait."""

    device = torch.device("cuda", 0)

    def __init__(self, n: int) -> None:
        self.shape = (n,)

    def __len__(self) -> int:
        return self.shape[0]


def test_cuda_work_is_waited_for_before_every_clock_reading(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    waited: list[object] = []

    def synchronize(device: object = None) -> None:
        waited.append(device)
        clock.log.append("sync")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    runs = {"a": clock.run("a", 1.0), "b": clock.run("b", 1.0)}
    interleaved_timing(runs, [_OnGpu(2)] * 3, reference="a", rounds=2, warmup=0)
    assert len(waited) == 2 * 2 * 3 * 2  # configurations x rounds x calls x (start, end)
    assert set(waited) == {torch.device("cuda", 0)}  # the inputs' device
    assert clock.log[:2] == ["a", "b"]  # one untimed call each, then every timed call between waits
    timed = [i for i, entry in enumerate(clock.log) if entry != "sync" and i >= 2]
    assert len(timed) == 12 and all(clock.log[i - 1] == clock.log[i + 1] == "sync" for i in timed)
    # onnxruntime's numpy inputs beside PyTorch's CUDA tensors: still waited for
    waited.clear()
    interleaved_timing(runs, {"a": [_OnGpu(1)], "b": [np.zeros(1)]}, reference="a", rounds=1, warmup=0)
    assert len(waited) == 4
    # CPU tensors with an explicit CUDA device (the caller knows where the network is)
    waited.clear()
    interleaved_timing(runs, [torch.zeros(1)], reference="a", rounds=1, warmup=0, device="cuda:1")
    assert waited == [torch.device("cuda", 1)] * 4


def test_cpu_timing_reads_the_clock_as_is(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("synchronised on the CPU"))
    runs = {"a": clock.run("a", 1.0)}
    interleaved_timing(runs, [torch.zeros(1)], reference="a", rounds=2, warmup=0)
    interleaved_timing(runs, [np.zeros(1)], reference="a", rounds=1, warmup=0, device="cpu")
    assert timing_module._clock(None) is timing_module.time.perf_counter  # nothing added per call
    assert timing_module.synchronizer("cpu") is None and timing_module.synchronizer(None) is None
