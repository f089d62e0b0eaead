"""The engine over real PyTorch stages: answers equal `AdaptiveRuntime`'s, faults stay in their batch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from bofexits.errors import ConfigError, InputError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitPolicy, GlobalThreshold, Patience
from bofexits.serving import Answer, Engine, Overloaded, ShuttingDown, SloController
from bofexits.serving.torch_stages import TorchStages
from tests.helpers import fit_calibration, tiny_facts


def _collect(engine: Engine, x: np.ndarray, results: dict[int, Any], offset: int) -> None:
    for k in range(x.shape[0]):  # one request per sample, as a server gets them
        engine.submit(x[k : k + 1], lambda row, a, k=k: results.__setitem__(offset + k, a))


def _served(engine: Engine, x: np.ndarray, interleave: int = 3) -> list[Answer]:
    """Answers for every sample; later requests arrive while earlier ones are inside the network."""
    results: dict[int, Any] = {}
    half = x.shape[0] // 2
    _collect(engine, x[:half], results, 0)
    for _ in range(interleave):
        engine.run_once()
    _collect(engine, x[half:], results, half)
    engine.run_until_idle()
    assert engine.in_flight == 0 and len(engine.scheduler) == 0
    return [results[k] for k in range(x.shape[0])]


def _median_score(net: MultiExitNetwork, x: torch.Tensor) -> float:
    """A threshold half the samples pass at the first exit, so every exit gets some."""
    return float(torch.softmax(net(x)[0], 1).max(1).values.median())


POLICIES: dict[str, Callable[[MultiExitNetwork, torch.Tensor], ExitPolicy]] = {
    "global": lambda net, x: GlobalThreshold(_median_score(net, x)),
    "patience": lambda net, x: Patience(2),
    "calibrated": lambda net, x: CalibratedThreshold(fit_calibration(net(x)), 0.5, "quantile"),
}


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("max_batch", [1, 4, 64])
def test_answers_equal_the_runtime(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor], name: str, max_batch: int
) -> None:
    x = 5 * images(40, seed=3)  # scaled: the random net's predictions vary, so patience has work
    with torch.no_grad():
        policy = POLICIES[name](tiny_net, x)
    reference = AdaptiveRuntime(tiny_net, policy)(x)
    engine = Engine(TorchStages(tiny_net, policy, tiny_facts()), max_batch=max_batch, max_wait_ms=0)
    answers = _served(engine, x.numpy())
    assert [a.exit - 1 for a in answers] == reference.exit_index.tolist()
    assert [a.class_index for a in answers] == reference.predictions.tolist()
    assert len(set(reference.exit_index.tolist())) >= 2  # several exits, so routing is really compared
    probs = torch.softmax(reference.logits, 1).max(1).values
    np.testing.assert_allclose([a.confidence for a in answers], probs.numpy(), rtol=1e-5)
    if max_batch == 4:  # survivors of different requests met in batches of up to 4
        assert max(h.mean() for h in engine.telemetry.batches) > 1


def test_a_policy_whose_state_cannot_join_is_refused(tiny_net: MultiExitNetwork) -> None:
    class Listed(GlobalThreshold):
        def begin(self, batch_size: int) -> Any:
            return [0] * batch_size

    with pytest.raises(ConfigError, match="cannot be joined across requests"):
        TorchStages(tiny_net, Listed(0.5), tiny_facts())


class _Flaky(TorchStages):
    """Stages whose `fail_at`-th step raises."""

    fail_at = 1
    calls = 0

    def step(self, i: int, x: Any, state: Any) -> tuple[Any, Any, Any]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return super().step(i, x, state)


def test_a_failing_batch_fails_only_its_requests(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor]
) -> None:
    engine = Engine(_Flaky(tiny_net, GlobalThreshold(0.4), tiny_facts()), max_batch=4, max_wait_ms=0)
    x = images(8, seed=2).numpy()
    results: dict[int, Any] = {}
    _collect(engine, x, results, 0)
    engine.run_until_idle()
    failed = [k for k, r in results.items() if isinstance(r, BaseException)]
    assert len(results) == 8 and len(failed) == 4  # the first stage batch of 4
    assert all(isinstance(results[k], Answer) for k in set(range(8)) - set(failed))
    health = engine.health()
    assert health["batch_failures"] == 1 and "boom" in health["last_failure"] and health["in_flight"] == 0
    assert "bofexits_batch_failures_total 1" in engine.telemetry.render()


def test_bad_inputs_are_refused_before_they_share_a_batch(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor]
) -> None:
    engine = Engine(TorchStages(tiny_net, GlobalThreshold(0.4), tiny_facts()))
    x = images(2).numpy()
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    for wrong, words in ((x[:, :1], "expected a"), (bad, "NaN"), (x[:0], "n >= 1")):
        with pytest.raises(InputError, match=words):
            engine.submit(wrong, lambda row, a: None)
    assert engine.in_flight == 0 and len(engine.scheduler) == 0


def test_overload_is_refused_with_a_retry_time(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor]
) -> None:
    engine = Engine(TorchStages(tiny_net, GlobalThreshold(0.4), tiny_facts()), max_queue=2)
    x = images(3).numpy()
    engine.submit(x[:2], lambda row, a: None)
    with pytest.raises(Overloaded, match="limit is 2") as info:
        engine.submit(x[2:], lambda row, a: None)
    assert info.value.retry_after_s >= 1
    assert 'bofexits_requests_total{status="rejected"} 1' in engine.telemetry.render()


def test_the_worker_thread_answers_and_drains(
    tiny_net: MultiExitNetwork, images: Callable[..., torch.Tensor]
) -> None:
    engine = Engine(TorchStages(tiny_net, GlobalThreshold(0.4), tiny_facts()), max_batch=8)
    engine.start()
    x = images(20).numpy()
    done = threading.Event()
    results: dict[int, Any] = {}

    def on_done(k: int, a: Any) -> None:
        results[k] = a
        if len(results) == 20:
            done.set()

    for k in range(20):
        engine.submit(x[k : k + 1], lambda row, a, k=k: on_done(k, a))
    assert engine.stop(timeout_s=20)  # drains what was accepted
    assert done.is_set() and all(isinstance(a, Answer) for a in results.values())
    with pytest.raises(ShuttingDown):
        engine.submit(x[:1], lambda row, a: None)
    assert engine.health()["status"] == "draining"


class _Signals:
    """What the controller reads from an engine, settable."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.oldest = 0.0
        self.beta = 0.9
        self.backend = type("B", (), {"facts": tiny_facts()})()
        self.telemetry = self

    def recent(self, since_s: float | None = None) -> list[float]:
        return self.latencies

    def oldest_wait_s(self) -> float:
        return self.oldest

    def set_beta(self, beta: float) -> None:
        self.beta = beta


def test_the_slo_controller_cuts_under_pressure_and_recovers() -> None:
    ctl = SloController(0.05, set_point=0.9, beta_min=0.1, log_scale=False, period_s=0.1, cut=0.5, rise=0.1)
    engine: Any = _Signals()
    engine.latencies = [0.08] * 20  # p95 80 ms > 0.7 x 50 ms
    ctl(engine, 1.0)
    assert engine.beta == pytest.approx(0.5)  # level 1 -> 0.5: 0.1 + 0.5 x 0.8
    ctl(engine, 1.05)  # within the period: no change yet
    assert engine.beta == pytest.approx(0.5)
    engine.latencies, engine.oldest = [0.01], 0.03  # answers fast, but a queue builds: still pressure
    ctl(engine, 1.2)
    assert engine.beta == pytest.approx(0.3)
    engine.oldest = 0.0
    for t in range(20):  # calm: additive increase back to the set point, never past it
        ctl(engine, 2.0 + t)
    assert engine.beta == pytest.approx(0.9) and ctl.level == 1.0
    assert len(ctl.trajectory) == 2 + 8
    with pytest.raises(ConfigError, match="SLO"):
        SloController(0.0, 0.9)


def test_the_slo_controller_moves_evenly_in_log_one_minus_beta() -> None:
    ctl = SloController(0.05, set_point=0.99, beta_min=0.0)
    assert ctl.beta == pytest.approx(0.99)
    ctl.level = 0.5  # halfway between log(1 - 0) and log(1 - 0.99): 1 - 0.1
    assert ctl.beta == pytest.approx(0.9)
    ctl.level = 0.0
    assert ctl.beta == pytest.approx(0.0)
