"""Adaptive runtime: batched == batch-1 == run-every-exit-then-pick, and skipped stages really skipped."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bofexits.errors import InputError
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration
from bofexits.policies.base import ExitPolicy
from tests.helpers import by_id_policy

POLICIES = [
    ("mean", 0.0),
    ("mean", 0.9),
    ("mean", 1.0),
    ("mean", 1.1),
    ("mean", 100.0),
    ("quantile", 0.0),
    ("quantile", 0.3),
    ("quantile", 0.6),
    ("quantile", 1.0),
]
MODELS = [
    {},
    {"aggregation": "none"},
    {"aggregation": "sum", "spatial_level": 1},
    {"shared_classifier": False, "membership": "logistic"},
]


def _calibrated(net: MultiExitNetwork, images, score: str = "max_prob") -> ExitCalibration:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return ExitCalibration.fit(net(images(64, seed=2))[:-1], score)


def reference(
    net: MultiExitNetwork, policy: CalibratedThreshold, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every exit, then take the first whose score reaches its threshold (else the final)."""
    with torch.no_grad():
        outs = net(x)
    n = x.shape[0]
    exit_index = torch.full((n,), len(outs) - 1)
    for i in reversed(range(len(outs) - 1)):
        stop = policy.stop(i, outs[i], None)[0]
        exit_index[stop] = i
    logits = torch.stack(outs)[exit_index, torch.arange(n)]
    return logits, exit_index


@pytest.mark.parametrize("model_kwargs", MODELS)
@pytest.mark.parametrize("variant, beta", POLICIES)
def test_batched_equals_reference_and_batch1(
    tiny_net_factory,
    images,
    model_kwargs: dict[str, Any],  # type: ignore[no-untyped-def]
    variant: str,
    beta: float,
) -> None:
    net = tiny_net_factory(**model_kwargs)
    policy = CalibratedThreshold(_calibrated(net, images), beta, variant)
    runtime = AdaptiveRuntime(net, policy)
    x = images(16)
    r = runtime(x)
    assert isinstance(r, ExitResult)
    assert r.exit_index.dtype == torch.long and r.exit_index.shape == (16,)
    assert r.logits.shape == (16, 5)
    want_logits, want_index = reference(net, policy, x)
    assert torch.equal(r.exit_index, want_index)
    torch.testing.assert_close(r.logits, want_logits, atol=1e-10, rtol=1e-8)
    assert torch.equal(r.predictions, want_logits.argmax(1))
    singles = [runtime(x[i : i + 1]) for i in range(16)]
    assert torch.equal(torch.cat([s.exit_index for s in singles]), r.exit_index)
    torch.testing.assert_close(torch.cat([s.logits for s in singles]), r.logits, atol=1e-10, rtol=1e-8)
    assert torch.equal(torch.cat([s.predictions for s in singles]), r.predictions)


def test_policies_cover_mixed_exits(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    # Guard for the test above: with the default model some betas do spread samples over exits.
    net = tiny_net_factory()
    cal = _calibrated(net, images)
    seen = set()
    for variant, beta in POLICIES:
        r = AdaptiveRuntime(net, CalibratedThreshold(cal, beta, variant))(images(16))
        seen |= set(r.exit_index.tolist())
    assert seen == {0, 1, 2, 3}
    r = AdaptiveRuntime(net, CalibratedThreshold(cal, 0.6, "quantile"))(images(16))
    assert len(set(r.exit_index.tolist())) >= 3


def _count_stage_inputs(runtime: AdaptiveRuntime) -> tuple[list[int], list[Any]]:
    """Hook the stages the runtime actually runs (its folded copies when optimize=True).

    Batch 1 runs `stages`, batches the channels-last `batch_stages`; both are counted.
    """
    counts = [0] * len(runtime.stages)
    handles = []
    pairs = list(enumerate(runtime.stages))
    if runtime.batch_stages is not runtime.stages:
        pairs += list(enumerate(runtime.batch_stages))
    for i, stage in pairs:

        def hook(_m: Any, args: tuple[torch.Tensor, ...], _out: Any, i: int = i) -> None:
            counts[i] += int(args[0].shape[0])

        handles.append(stage.register_forward_hook(hook))
    return counts, handles


@pytest.mark.parametrize("variant, beta", POLICIES)
def test_later_stages_skip_exited_samples(tiny_net_factory, images, variant: str, beta: float) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    runtime = AdaptiveRuntime(net, CalibratedThreshold(_calibrated(net, images), beta, variant))
    x = images(16)
    counts, handles = _count_stage_inputs(runtime)
    r = runtime(x)
    want = [int((r.exit_index >= i).sum()) for i in range(4)]
    assert counts == want
    counts[:] = [0] * 4
    for i in range(16):
        runtime(x[i : i + 1])
    assert counts == want
    for h in handles:
        h.remove()


def test_all_stop_at_first_exit_runs_one_stage(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    runtime = AdaptiveRuntime(net, CalibratedThreshold(_calibrated(net, images), 0.0, "quantile"))
    counts, _ = _count_stage_inputs(runtime)
    r = runtime(images(10))
    assert r.exit_index.tolist() == [0] * 10
    assert counts == [10, 0, 0, 0]
    with torch.no_grad():
        torch.testing.assert_close(r.logits, net(images(10))[0])


def test_none_stop_runs_everything(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    runtime = AdaptiveRuntime(net, CalibratedThreshold(_calibrated(net, images), 100.0, "mean"))
    counts, _ = _count_stage_inputs(runtime)
    r = runtime(images(10))
    assert r.exit_index.tolist() == [3] * 10
    assert counts == [10] * 4
    torch.testing.assert_close(r.logits, net.forward_backbone(images(10)))


def ByIdPolicy() -> ExitPolicy:  # noqa: N802 - reads as the class it builds
    return by_id_policy()


def test_policy_state_follows_the_shrinking_batch(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    r = AdaptiveRuntime(net, ByIdPolicy())(images(11))
    assert r.exit_index.tolist() == [i % 4 for i in range(11)]
    with torch.no_grad():
        outs = torch.stack(net(images(11)))
    torch.testing.assert_close(r.logits, outs[torch.arange(11) % 4, torch.arange(11)])


def test_runtime_puts_model_in_eval_mode(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory().train()
    AdaptiveRuntime(net, ByIdPolicy())
    assert not net.training


def test_runtime_checks_inputs(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    runtime = AdaptiveRuntime(tiny_net_factory(), ByIdPolicy())
    with pytest.raises(InputError, match=r"\(B, 2, 8, 8\)"):
        runtime(torch.zeros(3, 1, 8, 8, dtype=torch.float64))
    x = torch.zeros(3, 2, 8, 8, dtype=torch.float64)
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(InputError):
        runtime(x)
    with pytest.raises(InputError):
        runtime(x[1:2])


def test_nan_final_logits_raise(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    with torch.no_grad():
        net.stages[-1][-1].weight[0, 0] = float("nan")  # type: ignore[index]
    runtime = AdaptiveRuntime(net, CalibratedThreshold(_calibrated(net, images), 100.0, "mean"))
    with pytest.raises(InputError, match="NaN"):
        runtime(images(4))
    with pytest.raises(InputError, match="NaN"):
        runtime(images(1))


def test_nan_logits_at_taken_exit_raise(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    with torch.no_grad():
        net.exits.classifiers[0].bias[1] = float("nan")
    # ByIdPolicy stops sample 0 at exit 0 whatever its logits are
    with pytest.raises(InputError, match="NaN"):
        AdaptiveRuntime(net, ByIdPolicy())(images(4))
    with pytest.raises(InputError, match="NaN"):
        AdaptiveRuntime(net, ByIdPolicy())(images(1))


@pytest.mark.parametrize("batch", [1, 6])
def test_nan_early_exit_logits_raise(tiny_net_factory, images, batch: int) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    cal = _calibrated(net, images)
    with torch.no_grad():
        net.exits.classifiers[0].weight[0, 0] = float("nan")
    runtime = AdaptiveRuntime(net, CalibratedThreshold(cal, 1.0, "mean"))
    with pytest.raises(InputError, match="NaN"):
        runtime(images(batch))
