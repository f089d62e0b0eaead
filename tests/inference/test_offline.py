"""Offline simulation from all exits equals the real adaptive runtime; the oracle takes the earliest correct exit."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from bofexits.errors import InputError
from bofexits.evaluation.cost import measure_costs
from bofexits.inference.offline import oracle, simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import (
    BudgetedThreshold,
    CalibratedThreshold,
    EntropyThreshold,
    ExitCalibration,
    ExitPolicy,
    FullNetwork,
    GlobalThreshold,
    Patience,
    SingleExit,
    confidence,
)

# Tiny random nets whose exits disagree with each other (so patience has something to do).
NETS: list[tuple[int, dict[str, Any]]] = [
    (1, {}),
    (3, {"aggregation": "none"}),
    (3, {"shared_classifier": False, "membership": "logistic"}),
]


def _quantile(values: list[torch.Tensor], level: float) -> float:
    return float(torch.quantile(torch.cat(values).double(), level))


def all_policies(net: MultiExitNetwork, images) -> list[ExitPolicy]:  # type: ignore[no-untyped-def]
    """Every policy, with knobs read off validation images so that samples spread over the exits."""
    with torch.no_grad():
        val = net(images(64, seed=2))
    # global knobs from exit 1's scores: some samples stop there, the rest go on
    prob = [confidence(val[0], "max_prob")]
    entropy = [-confidence(val[0], "neg_entropy")]
    # measure_costs runs a float32 input, so count on a float32 copy (the counts do not depend on dtype)
    macs = measure_costs(copy.deepcopy(net).float()).macs_at_exit()
    low = macs[0] / macs[-1]
    return [
        GlobalThreshold(_quantile(prob, 0.5)),
        GlobalThreshold(_quantile(prob, 0.8)),
        GlobalThreshold(_quantile([confidence(val[0], "margin")], 0.5), "margin"),
        EntropyThreshold(_quantile(entropy, 0.2)),
        EntropyThreshold(_quantile(entropy, 0.5)),
        Patience(1),
        Patience(2),
        Patience(3),
        Patience(4),
        BudgetedThreshold.fit(val[:-1], macs, low + 0.3 * (1 - low), macs[-1]),
        BudgetedThreshold.fit(val[:-1], macs, low + 0.7 * (1 - low), macs[-1], "max_logit"),
        SingleExit(0),
        SingleExit(2),
        SingleExit(3),
        SingleExit(10),
        FullNetwork(),
        CalibratedThreshold(ExitCalibration.fit(val[:-1], "max_prob"), 0.5, "quantile"),
    ]


@pytest.mark.parametrize("seed, model_kwargs", NETS)
def test_simulate_equals_real_runtime(
    tiny_net_factory, images, seed: int, model_kwargs: dict[str, Any]
) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(seed, **model_kwargs)
    x = images(24, seed=7)
    with torch.no_grad():
        outs = net(x)
    seen: set[int] = set()
    for policy in all_policies(net, images):
        runtime = AdaptiveRuntime(net, policy, optimize=False)
        real = runtime(x)
        sim = simulate(policy, outs)
        what = policy.describe()
        assert torch.equal(sim.exit_index, real.exit_index), what
        assert torch.equal(sim.predictions, real.predictions), what
        torch.testing.assert_close(sim.logits, real.logits, atol=1e-10, rtol=1e-8, msg=str(what))
        single = torch.cat([runtime(x[i : i + 1]).exit_index for i in range(x.shape[0])])
        assert torch.equal(single, real.exit_index), what  # the batch-1 path (stop_one) agrees
        seen |= set(real.exit_index.tolist())
    assert seen == {0, 1, 2, 3}


def test_policies_spread_samples_over_exits(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    # Guard for the test above: each adaptive policy really mixes exits on at least one net.
    mixed: dict[str, bool] = {}
    for seed, kwargs in NETS:
        net = tiny_net_factory(seed, **kwargs)
        with torch.no_grad():
            outs = net(images(24, seed=7))
        for k, policy in enumerate(all_policies(net, images)[:11]):
            if isinstance(policy, Patience) and policy.patience in (1, 4):
                continue  # all at exit 1 / all at the end, by construction
            key = f"{k}: {policy.name}"
            mixed[key] = mixed.get(key, False) or len(set(simulate(policy, outs).exit_index.tolist())) >= 2
    assert all(mixed.values()), mixed


def test_simulate_checks_only_the_logits_it_reaches() -> None:
    # Like the runtime: sample 0 leaves at exit 0, so NaN at its later exits is never looked at.
    exits = [torch.tensor([[5.0, 0.0], [0.0, 0.0]]), torch.tensor([[float("nan"), 0.0], [0.0, 3.0]])]
    exits.append(torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]))
    r = simulate(GlobalThreshold(0.9), exits)
    assert r.exit_index.tolist() == [0, 1] and r.predictions.tolist() == [0, 1]
    exits[1][1, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        simulate(GlobalThreshold(0.9), exits)
    exits[1][1, 0] = 0.0
    exits[2][1, 0] = float("inf")
    with pytest.raises(InputError, match="NaN"):
        simulate(FullNetwork(), exits)


def test_simulate_and_runtime_both_reject_nan_exit_logits(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(1)
    with torch.no_grad():
        net.exits.classifiers[0].weight[0, 0] = float("nan")
        outs = net(images(6))
    for policy in (Patience(2), GlobalThreshold(0.5), SingleExit(3)):
        with pytest.raises(InputError, match="NaN"):
            simulate(policy, outs)
        with pytest.raises(InputError, match="NaN"):
            AdaptiveRuntime(net, policy, optimize=False)(images(6))
        with pytest.raises(InputError, match="NaN"):
            AdaptiveRuntime(net, policy, optimize=False)(images(1))


def test_simulate_input_errors() -> None:
    with pytest.raises(InputError):
        simulate(FullNetwork(), [])
    with pytest.raises(InputError):
        simulate(FullNetwork(), [torch.zeros(3, 2), torch.zeros(4, 2)])
    with pytest.raises(InputError):
        simulate(FullNetwork(), [torch.zeros(3)])


def test_simulate_empty_batch() -> None:
    r = simulate(Patience(2), [torch.zeros(0, 3)] * 3)
    assert r.exit_index.shape == (0,) and r.logits.shape == (0, 3)


def test_oracle_hand() -> None:
    exits = [
        torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]]),  # 0 0 0 2
        torch.tensor([[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0]]),  # 1 1 0 2
        torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]),  # 2 1 1 2
    ]
    labels = torch.tensor([0, 1, 1, 0])
    r = oracle(exits, labels)
    assert r.exit_index.tolist() == [0, 1, 2, 2]  # the last sample is never right: the final exit
    assert r.predictions.tolist() == [0, 1, 1, 2]
    torch.testing.assert_close(r.logits, torch.stack([exits[0][0], exits[1][1], exits[2][2], exits[2][3]]))


def test_oracle_on_a_network(tiny_net_factory, images) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        outs = tiny_net_factory(3, aggregation="none")(images(40, seed=4))
    labels = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(0))
    r = oracle(outs, labels)
    for n in range(40):
        correct = [i for i, lg in enumerate(outs) if int(lg[n].argmax()) == int(labels[n])]
        want = correct[0] if correct else len(outs) - 1
        assert int(r.exit_index[n]) == want
        torch.testing.assert_close(r.logits[n], outs[want][n])
    assert len(set(r.exit_index.tolist())) >= 2
    with pytest.raises(InputError, match="labels"):
        oracle(outs, labels[:5])
