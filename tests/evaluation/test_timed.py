"""Runtimes timed against the plain backbone: the same images one by one and in batches, and what
a point's timing holds."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from bofexits.data import ImageDataset
from bofexits.evaluation.timed import REFERENCE, TimingImages, TimingSummary, time_runtimes, timing_images
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import GlobalThreshold, SingleExit


def _dataset(n: int) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 2, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(imgs, torch.zeros(n, dtype=torch.long), ("a",), (0.5, 0.5), (0.25, 0.25), "t")


def test_timing_images_are_the_same_images_one_by_one_and_batched() -> None:
    images = timing_images(_dataset(10), samples=7, batch_size=4, batches=2)
    assert len(images.singles) == 7 and [len(b) for b in images.batches] == [4, 4]
    assert images.batched_samples == 8 and images.batch_size == 4
    assert torch.equal(torch.cat(images.singles), torch.cat(images.batches)[:7])
    few = timing_images(_dataset(3), samples=5, batch_size=4, batches=2)  # fewer images than asked for
    assert len(few.singles) == 3 and few.batched_samples == 3


def test_time_runtimes_against_the_backbone(
    tiny_net_factory: Callable[..., MultiExitNetwork], images: Callable[..., torch.Tensor]
) -> None:
    net = tiny_net_factory()
    base = AdaptiveRuntime(net, SingleExit(0), check_inputs=False)
    x = images(6)
    batch = TimingImages([x[i : i + 1] for i in range(4)], [x[:3], x[3:]], 3)
    runtimes = {"exit1": base, "threshold": base.with_policy(GlobalThreshold(0.5))}
    timed = time_runtimes(base.plain_backbone(), runtimes, batch, rounds=2)
    assert set(timed.batch1.rounds) == {REFERENCE, "exit1", "threshold"} and timed.batched.call_sizes == [
        3,
        3,
    ]
    p = timed.point("exit1")
    values = [p.batch1_ms, p.batch1_speedup, p.batched_ms, p.batch1_mean_ms, p.batch1_p50_ms, p.batch1_p99_ms]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert p.batch1_p50_ms <= p.batch1_p95_ms <= p.batch1_p99_ms
    assert timed.point(REFERENCE).batch1_speedup == 1.0
    summary = TimingSummary.of([timed, timed], batch, 2)
    assert summary.batch1_samples == 4 and summary.batched_samples == 6 and summary.batched_size == 3
    assert summary.backbone_batch1_ms == pytest.approx(timed.batch1.median(REFERENCE) * 1e3)
    assert summary.device == "cpu" and not summary.on_gpu
    on_cpu = time_runtimes(base.plain_backbone(), runtimes, batch, rounds=1, device="cpu")
    assert on_cpu.batch1.call_sizes == [1] * 4
    with pytest.raises(ValueError, match="plain backbone"):
        time_runtimes(base.plain_backbone(), {REFERENCE: base}, batch, rounds=1)


def test_timing_images_go_to_the_device_once() -> None:
    images = timing_images(_dataset(6), samples=3, batch_size=4, batches=1, device="cpu")
    assert images.device == torch.device("cpu") and images.to("cpu") is images
    assert TimingImages([], [], 4).device == torch.device("cpu")  # nothing timed: the CPU


def test_the_device_is_recorded_and_old_summaries_were_on_the_cpu() -> None:
    summary = TimingSummary(1, 3, 16, 100, 2, 0.5, 0.01, device="NVIDIA H200")
    data = summary.to_dict()
    assert data["device"] == "NVIDIA H200" and TimingSummary.from_dict(data) == summary and summary.on_gpu
    old = {k: v for k, v in data.items() if k != "device"}  # written before GPUs were supported
    assert TimingSummary.from_dict(old).device == "cpu"
