"""benchmarks/serve_load.py's parts on a tiny network: an open-loop rate, the summary, the block, the plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import GlobalThreshold
from bofexits.serving import Engine
from bofexits.serving.torch_stages import PlainStages, TorchStages
from tests.helpers import load_script, tiny_facts

bench = load_script("serve_load")
FACTS = tiny_facts()


def test_an_open_loop_rate_and_its_report(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor], tmp_path: Path
) -> None:
    x = images(16).float().numpy()
    net = tiny_net.float()
    labels = np.zeros(16, dtype=int)
    macs = np.array([1.0, 2.0, 3.0, 4.0])
    points = []
    for server, engine in (
        ("plain", Engine(PlainStages(net, FACTS), max_batch=8)),
        ("knee", Engine(TorchStages(net, GlobalThreshold(0.25), FACTS), max_batch=8)),
        ("slo", Engine(TorchStages(net, GlobalThreshold(0.25), FACTS), max_batch=8)),
    ):
        engine.start()
        r = bench.run_rate(engine, x, labels, macs if server != "plain" else macs[-1:], 200.0, 0.2, seed=0)
        engine.stop()
        assert r["answered"] + r["dropped"] == r["sent"] >= 10 and r["p50_ms"] > 0
        assert 0.25 <= r["relative_macs"] <= 1.0
        stage_batch = [engine.telemetry.mean_batch(i) for i in range(engine.num_exits)]
        points.append(
            bench.RatePoint(server, 0.5, 200.0, beta_end=None, beta_min=None, stage_batch=stage_batch, **r)
        )
    args = SimpleNamespace(slo_ms=1000.0, threads=1, duration=0.2, max_batch=8, max_wait_ms=5.0)
    result = bench.summarise(points, {"plain": 400.0, "knee": 500.0}, args, {}, 0.9, "cpu")
    assert result["capacity_at_slo_per_s"]["plain"] == 200.0  # p95 under a generous SLO, no drops
    assert result["targets"]["mean_latency_ratio_at_50pct"] > 0
    block = bench.markdown(result)
    assert block.count("\n| ") == 4 and "| knee | 50% (200/s)" in block
    bench.plot(points, 1000.0, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
