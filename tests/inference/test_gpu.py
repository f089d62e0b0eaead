"""CudaAdaptiveRuntime: the CPU runtime's exits and logits, NaN refused, at most one host read per exit.

Everything but the CUDA graphs runs on the CPU; the tests marked `gpu` need a CUDA device
(benchmarks/gpu_check.py runs them there).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bofexits.errors import InputError
from bofexits.inference import gpu
from bofexits.inference.gpu import CudaAdaptiveRuntime, ThresholdRule, near_threshold, threshold_rule
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import (
    CalibratedThreshold,
    EntropyThreshold,
    ExitCalibration,
    GlobalThreshold,
    Patience,
)
from bofexits.policies.base import ExitPolicy
from bofexits.policies.thresholds import ScoreThreshold
from tests.helpers import by_id_policy

aten = torch.ops.aten
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

RULES = [("mean", 0.9), ("mean", 1.05), ("quantile", 0.3), ("quantile", 0.6), ("conditional", 0.5)]
MODELS = [{}, {"aggregation": "none"}, {"shared_classifier": False, "membership": "logistic"}]


def _calibration(net: MultiExitNetwork, images, score: str = "max_prob") -> ExitCalibration:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        return ExitCalibration.fit(net(images(64, seed=2))[:-1], score)


def _assert_same(got: ExitResult, want: ExitResult) -> None:
    assert torch.equal(got.exit_index, want.exit_index)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-10, rtol=1e-8)


def _singles(runtime: AdaptiveRuntime, x: torch.Tensor) -> ExitResult:
    out = [runtime(x[i : i + 1]) for i in range(x.shape[0])]
    return ExitResult(torch.cat([r.logits for r in out]), torch.cat([r.exit_index for r in out]))


@pytest.mark.parametrize("model_kwargs", MODELS)
@pytest.mark.parametrize("variant, beta", RULES)
def test_same_exits_and_logits_as_the_cpu_runtime(
    tiny_net_factory, images, model_kwargs, variant, beta
) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(**model_kwargs)
    policy = CalibratedThreshold(_calibration(net, images), beta, variant)
    fast, ref = CudaAdaptiveRuntime(net, policy), AdaptiveRuntime(net, policy)
    x = images(16)
    want = ref(x)
    _assert_same(fast(x), want)
    _assert_same(_singles(fast, x), _singles(ref, x))
    assert torch.equal(_singles(fast, x).exit_index, want.exit_index)


def test_the_rules_cover_every_exit(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    # Guard for the test above: the betas do spread samples over all exits.
    net = tiny_net_factory()
    cal = _calibration(net, images)
    seen: set[int] = set()
    for variant, beta in RULES:
        seen |= set(
            CudaAdaptiveRuntime(net, CalibratedThreshold(cal, beta, variant))(images(16)).exit_index.tolist()
        )
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "policy",
    [GlobalThreshold(0.3), GlobalThreshold(0.25), EntropyThreshold(1.5), Patience(2)],
    ids=["global-0.3", "global-0.25", "entropy", "patience"],
)
def test_other_policies_match_the_cpu_runtime(tiny_net_factory, images, policy: ExitPolicy) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    fast, ref = CudaAdaptiveRuntime(net, policy), AdaptiveRuntime(net, policy)
    x = images(16)
    _assert_same(fast(x), ref(x))
    _assert_same(_singles(fast, x), _singles(ref, x))


def ByIdPolicy() -> ExitPolicy:  # noqa: N802 - reads as the class it builds
    return by_id_policy()


def test_stateful_policy_state_follows_the_batch(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    r = CudaAdaptiveRuntime(net, ByIdPolicy())(images(11))
    assert r.exit_index.tolist() == [i % 4 for i in range(11)]
    _assert_same(r, AdaptiveRuntime(net, ByIdPolicy())(images(11)))


def _count_stage_inputs(runtime: AdaptiveRuntime) -> list[int]:
    counts = [0] * len(runtime.stages)
    for stages in {
        id(runtime.stages): runtime.stages,
        id(runtime.batch_stages): runtime.batch_stages,
    }.values():
        for i, stage in enumerate(stages):

            def hook(_m: Any, args: tuple[torch.Tensor, ...], _out: Any, i: int = i) -> None:
                counts[i] += int(args[0].shape[0])

            stage.register_forward_hook(hook)
    return counts


@pytest.mark.parametrize(
    "thresholds, exits, stages",
    [
        ([-math.inf, -math.inf, -math.inf], [0] * 6, [6, 0, 0, 0]),  # all stop at the first exit
        ([math.inf, -math.inf, math.inf], [1] * 6, [6, 6, 0, 0]),  # survivors run out at exit 2
        ([math.inf, math.inf, math.inf], [3] * 6, [6, 6, 6, 6]),  # nobody stops early
    ],
    ids=["all-stop", "empty-survivors", "none-stop"],
)
def test_stopped_samples_skip_later_stages(tiny_net_factory, images, thresholds, exits, stages) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    policy = ScoreThreshold(thresholds, "max_logit")
    runtime = CudaAdaptiveRuntime(net, policy)
    counts = _count_stage_inputs(runtime)
    r = runtime(images(6))
    assert r.exit_index.tolist() == exits
    assert counts == stages
    _assert_same(r, AdaptiveRuntime(net, policy)(images(6)))
    counts[:] = [0] * 4
    _singles(runtime, images(6))
    assert counts == stages


def test_empty_batch(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    r = CudaAdaptiveRuntime(net, GlobalThreshold(0.3)).run_batched(images(0))
    assert r.logits.shape == (0, 5) and r.exit_index.shape == (0,)


def test_plain_is_the_backbone(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    runtime = CudaAdaptiveRuntime(net, GlobalThreshold(0.3))
    with torch.no_grad():
        for n in (1, 5):
            torch.testing.assert_close(runtime.plain(images(n)), net.forward_backbone(images(n)))


def test_with_policy_shares_the_prepared_network(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    cal = _calibration(net, images)
    runtime = CudaAdaptiveRuntime(net, CalibratedThreshold(cal, 0.3, "quantile"))
    other = runtime.with_policy(Patience(2))
    assert isinstance(other, CudaAdaptiveRuntime) and other.rule is None and runtime.rule is not None
    assert other.stages is runtime.stages and other._captured is runtime._captured
    _assert_same(other(images(8)), AdaptiveRuntime(net, Patience(2))(images(8)))


def test_threshold_rule_reads_the_thresholds_or_declines() -> None:
    cal = ExitCalibration("max_logit", torch.tensor([2.0, 4.0]), torch.zeros(2, 1001), 10)
    assert threshold_rule(CalibratedThreshold(cal, 1.5), 2) == ThresholdRule("max_logit", (3.0, 6.0))
    assert threshold_rule(EntropyThreshold(0.5), 2) == ThresholdRule("neg_entropy", (-0.5, -0.5))
    assert threshold_rule(Patience(2), 2) is None

    class Other(GlobalThreshold):
        def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
            return True, state

    assert threshold_rule(Other(0.5), 2) is None


def test_near_threshold_counts_only_reached_exits() -> None:
    rule = ThresholdRule("max_logit", (1.0, 2.0))
    logits = [
        torch.tensor([[1.0, 0.0], [1.00001, 0.0], [0.0, 0.0]]),
        torch.tensor([[2.0, 0.0]] * 3),
        torch.zeros(3, 2),
    ]
    assert near_threshold(logits, rule, torch.tensor([0, 0, 2])).tolist() == [True, True, True]
    assert near_threshold(logits, rule, torch.tensor([0, 0, 0]), tol=1e-6).tolist() == [True, False, False]


def test_unoptimized_forms_match(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    policy = CalibratedThreshold(_calibration(net, images), 0.5, "conditional")
    fast, ref = CudaAdaptiveRuntime(net, policy, optimize=False), AdaptiveRuntime(net, policy)
    _assert_same(fast(images(16)), ref(images(16)))
    _assert_same(_singles(fast, images(16)), _singles(ref, images(16)))


# ----------------------------------------------------------------------------- NaN and inf


@pytest.mark.parametrize("batch", [1, 6])
def test_nan_early_exit_logits_raise(tiny_net_factory, images, batch: int) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    cal = _calibration(net, images)
    with torch.no_grad():
        net.exits.classifiers[0].weight[0, 0] = float("nan")
    for policy in (CalibratedThreshold(cal, 1.0, "mean"), Patience(2)):
        with pytest.raises(InputError, match="NaN"):
            CudaAdaptiveRuntime(net, policy)(images(batch))


@pytest.mark.parametrize("batch", [1, 6])
def test_inf_logits_at_a_stopping_exit_raise(tiny_net_factory, images, batch: int) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    with torch.no_grad():
        net.exits.classifiers[0].bias[1] = float("inf")  # max_logit is inf: would stop everyone silently
    with pytest.raises(InputError, match="NaN"):
        CudaAdaptiveRuntime(net, GlobalThreshold(0.0, "max_logit"))(images(batch))


@pytest.mark.parametrize("batch", [1, 6])
def test_nan_final_logits_raise(tiny_net_factory, images, batch: int) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    with torch.no_grad():
        net.stages[-1][-1].weight[0, 0] = float("nan")  # type: ignore[index]
    with pytest.raises(InputError, match="NaN"):
        CudaAdaptiveRuntime(net, ScoreThreshold([math.inf] * 3, "max_logit"))(images(batch))


# ----------------------------------------------------------------------------- host reads


class _HiddenSyncs(TorchDispatchMode):
    """Counts aten ops that make the host wait for the device: scalar reads, nonzero, boolean indexing."""

    SYNCS = {  # under inference mode, .item() and bool() arrive as aten.item / aten.is_nonzero
        aten._local_scalar_dense.default,
        aten.item.default,
        aten.is_nonzero.default,
        aten.nonzero.default,
        aten.masked_select.default,
    }
    INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in self.SYNCS or (
            func in self.INDEXING and any(t is not None and t.dtype == torch.bool for t in args[1])
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def _count_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts the runtime's host reads (its `_read` and `_nonzero`) and any other sync-causing op.

    `tolist` reads a CPU tensor without an aten op, so it is counted by patching it.
    """
    counts = {"reads": 0, "nonzero": 0, "hidden": 0, "tolist": 0}
    read, nonzero, tolist = gpu._read, gpu._nonzero, torch.Tensor.tolist

    def counted_tolist(t: torch.Tensor) -> Any:
        counts["tolist"] += 1
        return tolist(t)

    def counted_read(t: torch.Tensor) -> Any:
        counts["reads"] += 1
        return read(t)

    def counted_nonzero(t: torch.Tensor) -> torch.Tensor:
        counts["nonzero"] += 1
        return nonzero(t)

    monkeypatch.setattr(gpu, "_read", counted_read)
    monkeypatch.setattr(gpu, "_nonzero", counted_nonzero)
    mode = _HiddenSyncs()
    with monkeypatch.context() as patch, mode:
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        yield counts
    counts["hidden"] = mode.count + counts["tolist"] - counts["reads"]


@pytest.mark.parametrize("variant, beta", [("quantile", 0.0), ("quantile", 0.5), ("mean", 100.0)])
def test_batched_path_reads_the_host_at_most_once_per_exit(
    tiny_net_factory, images, monkeypatch, variant, beta
) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    policy = CalibratedThreshold(_calibration(net, images), beta, variant)
    runtime = CudaAdaptiveRuntime(net, policy, check_inputs=False)
    with _count_reads(monkeypatch) as counts:
        r = runtime(images(16))
    exits_run = int(r.exit_index.max()) + 1
    assert counts["reads"] + counts["nonzero"] == exits_run
    assert counts["hidden"] == counts["nonzero"]  # no read besides the runtime's own
    # the counter does see the CPU design's extra reads (int(stop.sum()), boolean masks)
    with _count_reads(monkeypatch) as cpu_counts:
        AdaptiveRuntime(net, policy, check_inputs=False)(images(16))
    assert cpu_counts["hidden"] > exits_run


@pytest.mark.parametrize("variant, beta", [("quantile", 0.0), ("quantile", 0.5), ("mean", 100.0)])
def test_batch1_reads_the_host_once_per_exit(tiny_net_factory, images, monkeypatch, variant, beta) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory()
    runtime = CudaAdaptiveRuntime(net, CalibratedThreshold(_calibration(net, images), beta, variant))
    runtime.check_inputs = False
    for k in range(4):
        with _count_reads(monkeypatch) as counts:
            r = runtime(images(1, seed=k))
        assert counts["reads"] == int(r.exit_index) + 1
        assert counts["nonzero"] == 0 and counts["hidden"] == 0


# ----------------------------------------------------------------------------- CUDA only


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("variant, beta", [("quantile", 0.3), ("conditional", 0.5)])
def test_cuda_graphs_equal_eager(tiny_net_factory, images, variant: str, beta: float) -> None:  # type: ignore[no-untyped-def]
    policy = CalibratedThreshold(_calibration(tiny_net_factory(), images), beta, variant)
    net = tiny_net_factory().cuda()
    graphed = CudaAdaptiveRuntime(net, policy)
    eager = CudaAdaptiveRuntime(net, policy, graphs=False)
    assert graphed.graphs and not eager.graphs
    x = images(16).cuda()
    _assert_same(_singles(graphed, x), _singles(eager, x))
    _assert_same(_singles(graphed, x), graphed(x))
    assert graphed._captured  # the segments were captured
    torch.testing.assert_close(graphed.plain(x[:1]), eager.plain(x[:1]))
    other = graphed.with_policy(CalibratedThreshold(policy.calibration, 1.0 - beta / 2, variant))
    _assert_same(_singles(other, x), _singles(eager.with_policy(other.policy), x))
    assert len(graphed._captured) == 1  # the other beta replayed the same graphs


@pytest.mark.gpu
@cuda_only
def test_cuda_graphs_with_a_generic_policy(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    # Patience is no threshold rule: the graphs give the logits, its own stop_one decides
    x = images(12)
    want = _singles(AdaptiveRuntime(tiny_net_factory(), Patience(2)), x)
    got = _singles(CudaAdaptiveRuntime(tiny_net_factory().cuda(), Patience(2)), x.cuda())
    _assert_same(ExitResult(got.logits.cpu(), got.exit_index.cpu()), want)


@pytest.mark.gpu
@cuda_only
def test_gpu_routes_as_the_cpu_up_to_near_threshold_samples(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    cpu_net = tiny_net_factory()
    policy = CalibratedThreshold(_calibration(cpu_net, images), 0.5, "conditional")
    x = images(256, seed=5)
    want = AdaptiveRuntime(cpu_net, policy)(x)
    got = CudaAdaptiveRuntime(tiny_net_factory().cuda(), policy)(x.cuda())
    differ = (got.exit_index.cpu() != want.exit_index).cpu()
    with torch.no_grad():
        near = near_threshold(cpu_net(x), threshold_rule(policy, 3), want.exit_index, tol=1e-6)  # type: ignore[arg-type]
    print(f"GPU vs CPU: {int(differ.sum())} of 256 exits differ, {int(near.sum())} samples near a threshold")
    assert not bool((differ & ~near).any())
    same = ~differ
    torch.testing.assert_close(got.logits.cpu()[same], want.logits[same], atol=1e-8, rtol=1e-6)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("batch", [1, 64])
def test_cuda_synchronises_at_most_once_per_exit(tiny_net_factory, images, batch: int) -> None:  # type: ignore[no-untyped-def]
    cpu_net = tiny_net_factory()
    policy = CalibratedThreshold(_calibration(cpu_net, images), 0.5, "conditional")
    runtime = CudaAdaptiveRuntime(tiny_net_factory().cuda(), policy, check_inputs=False)
    x = images(batch, seed=3).cuda()
    runtime(x)  # capture first (capture itself synchronises)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            r = runtime(x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= int(r.exit_index.max()) + 1, [str(w.message) for w in syncs]
