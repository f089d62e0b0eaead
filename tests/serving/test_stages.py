"""Checkpoint stages and export stages through the engine: every test image answered as the runtimes do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bofexits.deploy.info import deploy_info
from bofexits.deploy.runner import OnnxAdaptiveRunner
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.serving import Answer, Engine
from bofexits.serving.load import open_stages


def _serve_all(engine: Engine, x: np.ndarray) -> list[Answer]:
    results: dict[int, Any] = {}
    for k in range(x.shape[0]):  # one request per image, arriving while others are inside
        engine.submit(x[k : k + 1], lambda row, a, k=k: results.__setitem__(k, a))
        if k % 3 == 0:
            engine.run_once()
    engine.run_until_idle()
    return [results[k] for k in range(x.shape[0])]


@pytest.mark.parametrize("source", ["ckpt", "export"])
@pytest.mark.parametrize("max_batch", [1, 8])
def test_every_test_image_is_answered_as_the_runtime_does(
    small_run: dict[str, Any], source: str, max_batch: int
) -> None:
    test = small_run["test"]
    x, _ = next(test.batches(len(test), shuffle=False))
    model, info = deploy_info(small_run["ckpt"])
    reference = AdaptiveRuntime(model, info.policy)(x)
    backend = open_stages(small_run[source], threads=1)
    assert backend.beta == info.beta and backend.facts.classes == info.classes
    answers = _serve_all(Engine(backend, max_batch=max_batch, max_wait_ms=0), x.numpy())
    exits = [a.exit - 1 for a in answers]
    assert exits == reference.exit_index.tolist()
    assert [a.class_index for a in answers] == reference.predictions.tolist()
    assert len(set(exits)) >= 2
    if source == "export":  # and as the export's own staged runner does
        staged = OnnxAdaptiveRunner(small_run["export"], threads=1).run_staged(x.numpy())
        assert exits == staged.exit_index.tolist()


@pytest.mark.parametrize("source", ["ckpt", "export"])
def test_beta_turns_on_both_backends(small_run: dict[str, Any], source: str) -> None:
    test = small_run["test"]
    x, _ = next(test.batches(len(test), shuffle=False))
    engine = Engine(open_stages(small_run[source], threads=1), max_batch=16)
    engine.set_beta(0.0)  # quantile rule at 0: everyone stops at the first exit
    assert {a.exit for a in _serve_all(engine, x.numpy())} == {1}
    engine.set_beta(1.0)
    model, info = deploy_info(small_run["ckpt"], beta=1.0)
    reference = AdaptiveRuntime(model, info.policy)(x)
    assert [a.exit - 1 for a in _serve_all(engine, x.numpy())] == reference.exit_index.tolist()
    assert "bofexits_beta 1" in engine.telemetry.render()
