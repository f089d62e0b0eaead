"""Baseline exit policies (SDN, BranchyNet, PABEE, MSDNet, fixed exits) on hand-worked examples."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from bofexits.errors import ConfigError, InputError, TargetUnreachableError
from bofexits.inference.offline import simulate
from bofexits.policies import (
    BudgetedThreshold,
    EntropyThreshold,
    ExitPolicy,
    FullNetwork,
    GlobalThreshold,
    Patience,
    SingleExit,
    create_policy,
    fit_budgeted_thresholds,
    list_policies,
)
from bofexits.policies.budgeted import budget_fractions, geometric_fractions

LN3, LN9, LN15 = math.log(3), math.log(9), math.log(1.5)
# Two classes, S = 3 exits, four samples. max_prob of [ln r, 0] is r / (r + 1):
# [ln 9, 0] -> 0.9, [ln 3, 0] -> 0.75, [0, ln 1.5] -> 0.6 (class 1), [0, ln 3] -> 0.75 (class 1).
HAND = [
    torch.tensor([[LN9, 0.0], [LN3, 0.0], [0.0, LN15], [0.0, LN3]]),  # 0.9 0.75 0.6 0.75 ; classes 0 0 1 1
    torch.tensor([[LN3, 0.0], [0.0, LN9], [LN3, 0.0], [0.0, LN9]]),  # 0.75 0.9 0.75 0.9 ; classes 0 1 0 1
    torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),  # final ; classes 1 0 1 0
]
# Binary entropy: H(0.9) = 0.325, H(0.75) = 0.562, H(0.6) = 0.673.


def _entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def run_one(policy: ExitPolicy, exit_logits: list[torch.Tensor]) -> tuple[list[int], list[int]]:
    """Batch-1 path sample by sample (`begin(1)` + `stop_one`), as `AdaptiveRuntime.run_single`."""
    exits, preds = [], []
    last = len(exit_logits) - 1
    for n in range(exit_logits[0].shape[0]):
        state = policy.begin(1)
        taken = last
        for i in range(last):
            stop, state = policy.stop_one(i, exit_logits[i][n : n + 1], state)
            if stop:
                taken = i
                break
        exits.append(taken)
        preds.append(int(exit_logits[taken][n].argmax()))
    return exits, preds


def check(policy: ExitPolicy, exit_logits: list[torch.Tensor], exits: list[int], preds: list[int]) -> None:
    r = simulate(policy, exit_logits)
    assert r.exit_index.tolist() == exits
    assert r.predictions.tolist() == preds
    assert run_one(policy, exit_logits) == (exits, preds)  # the batch-1 path agrees


# --- hand-worked examples ---------------------------------------------------------------------


def test_hand_example_scores() -> None:
    p = [torch.softmax(lg, 1).amax(1).tolist() for lg in HAND[:2]]
    assert p[0] == pytest.approx([0.9, 0.75, 0.6, 0.75]) and p[1] == pytest.approx([0.75, 0.9, 0.75, 0.9])
    assert _entropy(0.9) == pytest.approx(0.325, abs=1e-3) and _entropy(0.6) == pytest.approx(0.673, abs=1e-3)


@pytest.mark.parametrize(
    "threshold, exits, preds",
    [
        (0.8, [0, 1, 2, 1], [0, 1, 1, 1]),  # only 0.9 stops
        (0.7, [0, 0, 1, 0], [0, 0, 0, 1]),  # 0.75 stops too
        (0.5, [0, 0, 0, 0], [0, 0, 1, 1]),  # everything stops at exit 1
        (0.95, [2, 2, 2, 2], [1, 0, 1, 0]),  # nothing stops early
    ],
)
def test_global_threshold_hand(threshold: float, exits: list[int], preds: list[int]) -> None:
    check(GlobalThreshold(threshold), HAND, exits, preds)


def test_global_threshold_equality_stops() -> None:
    policy = GlobalThreshold(0.75)
    assert policy.stop(0, torch.tensor([[LN3, 0.0]]), None)[0].tolist() == [True]
    assert policy.stop_one(0, torch.tensor([[LN3, 0.0]]), None)[0] is True


def test_global_threshold_other_score() -> None:
    # max_logit: [ln 9, 0] -> 2.197, [ln 3, 0] -> 1.099, [0, ln 1.5] -> 0.405
    check(GlobalThreshold(2.0, "max_logit"), HAND, [0, 1, 2, 1], [0, 1, 1, 1])
    assert GlobalThreshold(2.0, "max_logit").describe() == {
        "name": "max-softmax",
        "score": "max_logit",
        "threshold": 2.0,
    }


@pytest.mark.parametrize(
    "threshold, exits, preds",
    [
        (0.4, [0, 1, 2, 1], [0, 1, 1, 1]),  # only H(0.9) = 0.325 is small enough
        (0.6, [0, 0, 1, 0], [0, 0, 0, 1]),  # H(0.75) = 0.562 too
        (0.7, [0, 0, 0, 0], [0, 0, 1, 1]),  # H(0.6) = 0.673 too
        (0.1, [2, 2, 2, 2], [1, 0, 1, 0]),  # nothing is that confident
        (0.0, [2, 2, 2, 2], [1, 0, 1, 0]),
    ],
)
def test_entropy_threshold_hand(threshold: float, exits: list[int], preds: list[int]) -> None:
    check(EntropyThreshold(threshold), HAND, exits, preds)


def test_entropy_threshold_boundary_is_inclusive() -> None:
    h = _entropy(0.75)
    logits = torch.tensor([[LN3, 0.0]], dtype=torch.float64)
    h_torch = -float((torch.softmax(logits, 1) * torch.log_softmax(logits, 1)).sum())
    assert h_torch == pytest.approx(h)
    assert EntropyThreshold(h_torch).stop(0, logits, None)[0].tolist() == [True]
    assert EntropyThreshold(h_torch * (1 - 1e-9)).stop(0, logits, None)[0].tolist() == [False]
    assert EntropyThreshold(0.5).describe() == {"name": "entropy", "threshold": 0.5}


def _one_hot(classes: list[int], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).double() * 2.0


# Predictions at exits 0..3 (3 = final) of five samples A..E.
PATIENCE_PREDS = [
    [0, 0, 0, 2],  # A
    [0, 1, 1, 1],  # B
    [2, 1, 2, 1],  # C
    [1, 1, 2, 2],  # D
    [2, 2, 2, 0],  # E
]
PATIENCE_LOGITS = [_one_hot([p[i] for p in PATIENCE_PREDS]) for i in range(4)]


@pytest.mark.parametrize(
    "patience, exits",
    [
        (1, [0, 0, 0, 0, 0]),  # the first exit always agrees with itself
        (2, [1, 2, 3, 1, 1]),
        (3, [2, 3, 3, 3, 2]),
        (4, [3, 3, 3, 3, 3]),  # would need 4 agreeing early exits; there are 3
        (9, [3, 3, 3, 3, 3]),
    ],
)
def test_patience_hand(patience: int, exits: list[int]) -> None:
    preds = [PATIENCE_PREDS[n][e] for n, e in enumerate(exits)]
    check(Patience(patience), PATIENCE_LOGITS, exits, preds)


def test_patience_state() -> None:
    policy = Patience(2)
    prev, run = policy.begin(3)
    assert prev.tolist() == [-1, -1, -1] and run.tolist() == [0, 0, 0]
    stop, (prev, run) = policy.stop(0, _one_hot([0, 1, 2]), (prev, run))
    assert stop.tolist() == [False] * 3 and prev.tolist() == [0, 1, 2] and run.tolist() == [1, 1, 1]
    stop, (prev, run) = policy.stop(1, _one_hot([0, 2, 2]), (prev, run))
    assert stop.tolist() == [True, False, True] and run.tolist() == [2, 1, 2]
    prev, run = policy.keep((prev, run), torch.tensor([False, True, False]))
    assert prev.tolist() == [2] and run.tolist() == [1]
    assert policy.describe() == {"name": "patience", "patience": 2}


def naive_patience(exit_logits: list[torch.Tensor], patience: int) -> list[int]:
    """Per sample, in plain Python: the first exit where the last `patience` predictions agree."""
    last = len(exit_logits) - 1
    out = []
    for n in range(exit_logits[0].shape[0]):
        preds = [int(lg[n].argmax()) for lg in exit_logits]
        taken = last
        for i in range(last):
            if i + 1 >= patience and len(set(preds[i + 1 - patience : i + 1])) == 1:
                taken = i
                break
        out.append(taken)
    return out


@pytest.mark.parametrize("patience", [1, 2, 3, 4, 5, 6])
def test_patience_state_shrinks_with_the_batch(patience: int) -> None:
    # Three classes and six exits: runs of every length, and samples leave at every exit.
    g = torch.Generator().manual_seed(patience)
    logits = [torch.randn(300, 3, generator=g) + torch.tensor([1.5, 0.0, 0.0]) for _ in range(6)]
    want = naive_patience(logits, patience)
    got = simulate(Patience(patience), logits).exit_index.tolist()
    assert got == want
    if 1 < patience < 5:
        assert len(set(want)) >= 3  # the batch really shrinks in steps
    assert run_one(Patience(patience), logits)[0] == want


def test_budgeted_threshold_hand() -> None:
    check(BudgetedThreshold([0.8, 0.7]), HAND, [0, 1, 1, 1], [0, 1, 0, 1])
    check(BudgetedThreshold([float("inf"), float("-inf")]), HAND, [1, 1, 1, 1], [0, 1, 0, 1])
    d = BudgetedThreshold([0.8, 0.7], budget=0.5).describe()
    assert d == {"name": "budgeted", "score": "max_prob", "thresholds": [0.8, 0.7], "budget": 0.5}


def test_budgeted_threshold_needs_one_per_exit() -> None:
    with pytest.raises(ConfigError, match="2 thresholds"):
        simulate(BudgetedThreshold([1.0, 1.0]), [torch.zeros(2, 2)] * 4)  # nothing stops before exit 2


@pytest.mark.parametrize("exit, exits", [(0, [0] * 4), (1, [1] * 4), (2, [2] * 4), (7, [2] * 4)])
def test_single_exit_hand(exit: int, exits: list[int]) -> None:
    preds = [int(HAND[exit if exit < 2 else 2][n].argmax()) for n in range(4)]
    check(SingleExit(exit), HAND, exits, preds)


def test_full_network_hand() -> None:
    check(FullNetwork(), HAND, [2, 2, 2, 2], [1, 0, 1, 0])
    assert FullNetwork().describe() == {"name": "full"}
    assert SingleExit(1).describe() == {"name": "single-exit", "exit": 1}


# --- MSDNet budgeted thresholds -----------------------------------------------------------------


def test_geometric_fractions() -> None:
    assert geometric_fractions(0.0, 4) == pytest.approx([0.25] * 4)
    assert geometric_fractions(math.log(2), 3) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    assert sum(geometric_fractions(500.0, 5)) == pytest.approx(1.0)  # no overflow
    assert geometric_fractions(500.0, 5)[-1] == pytest.approx(1.0)


def test_budget_fractions_hand() -> None:
    # macs 1, 2, 4 on a backbone of 4: q = 1 costs (1 + 2 + 4) / 3 / 4 = 7/12, q = 2 costs 3/4.
    assert budget_fractions([1, 2, 4], 7 / 12, 4) == pytest.approx([1 / 3] * 3, abs=1e-9)
    assert budget_fractions([1, 2, 4], 0.75, 4) == pytest.approx([1 / 7, 2 / 7, 4 / 7], abs=1e-9)
    assert budget_fractions([1, 2, 4], 0.25, 4) == [1.0, 0.0, 0.0]
    assert budget_fractions([1, 2, 4], 1.0, 4) == [0.0, 0.0, 1.0]
    # the budget is a fraction of the backbone: with exits costing 10% extra, 1.1 runs everything
    assert budget_fractions([1.1, 2.2, 4.4], 1.1, 4) == [0.0, 0.0, 1.0]
    assert budget_fractions([1.1, 2.2, 4.4], 7 / 12 * 1.1, 4) == pytest.approx([1 / 3] * 3, abs=1e-9)


def test_fit_budgeted_thresholds_hand() -> None:
    # Budget 7/12 on macs 1, 2, 4: a third of the six samples leaves at each exit.
    exit0 = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    exit1 = torch.tensor([[9.0, 0.0], [9.0, 0.0], [1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    # exit 1: samples 0, 1 (scores 5, 4); exit 2: of samples 2..5 (1, 3, 2, 0) the top two, 3 and 2.
    assert fit_budgeted_thresholds([exit0, exit1], [1, 2, 4], 7 / 12, 4, "max_logit") == [4.0, 2.0]
    policy = BudgetedThreshold.fit([exit0, exit1], [1, 2, 4], 7 / 12, 4, "max_logit")
    final = torch.zeros(6, 2)
    assert simulate(policy, [exit0, exit1, final]).exit_index.tolist() == [0, 0, 2, 1, 1, 2]
    assert policy.budget == pytest.approx(7 / 12)


def _random_exit_logits(n: int, exits: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # later exits are sharper, as in a trained network
    return [torch.randn(n, 10, generator=g) * (0.5 + i) for i in range(exits)]


MACS = [1.0, 2.2, 3.1, 4.5]
BACKBONE = 4.2  # the final exit's 4.5 includes 0.3 of exit heads


@pytest.mark.parametrize("budget", [0.25, 0.3, 0.45, 0.6, 0.75, 0.9, 0.99])
@pytest.mark.parametrize("score", ["max_prob", "max_logit"])
def test_budgeted_thresholds_meet_the_budget(budget: float, score: str) -> None:
    val = _random_exit_logits(2000, 4, seed=0)
    policy = BudgetedThreshold.fit(val[:-1], MACS, budget, BACKBONE, score)
    r = simulate(policy, val)
    realised = float(torch.tensor(MACS, dtype=torch.float64)[r.exit_index].mean()) / BACKBONE
    assert realised == pytest.approx(budget, rel=0.02)
    # the exit fractions follow the geometric law, to within a sample per exit
    counts = torch.bincount(r.exit_index, minlength=4).tolist()
    want = [2000 * p for p in budget_fractions(MACS, budget, BACKBONE)]
    assert all(abs(c - w) <= 1.0 for c, w in zip(counts, want, strict=True)), (counts, want)
    # unseen data from the same distribution lands close to the budget too
    test = _random_exit_logits(2000, 4, seed=1)
    r = simulate(policy, test)
    realised = float(torch.tensor(MACS, dtype=torch.float64)[r.exit_index].mean()) / BACKBONE
    assert realised == pytest.approx(budget, rel=0.05)


def test_budget_ends_of_the_reachable_range() -> None:
    val = _random_exit_logits(100, 4, seed=0)
    low, high = MACS[0] / BACKBONE, MACS[-1] / BACKBONE
    assert (
        simulate(BudgetedThreshold.fit(val[:-1], MACS, low, BACKBONE), val).exit_index.tolist() == [0] * 100
    )
    assert (
        simulate(BudgetedThreshold.fit(val[:-1], MACS, high, BACKBONE), val).exit_index.tolist() == [3] * 100
    )


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.2, 1.08, 2.0, -1.0])
def test_budget_out_of_reach(budget: float) -> None:
    val = _random_exit_logits(50, 4, seed=0)
    with pytest.raises(TargetUnreachableError, match=r"reachable range is \[0\.238095, 1\.07143\]"):
        fit_budgeted_thresholds(val[:-1], MACS, budget, BACKBONE)


def test_raising_the_budget_raises_compute() -> None:
    val = _random_exit_logits(500, 4, seed=2)
    macs = torch.tensor(MACS, dtype=torch.float64)
    realised = [
        float(macs[simulate(BudgetedThreshold.fit(val[:-1], MACS, b, BACKBONE), val).exit_index].mean())
        for b in (0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
    ]
    assert realised == sorted(realised) and realised[0] < realised[-1]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"exit_macs": [1.0, 2.0]}, ConfigError),  # S = 4 needs 4 values
        ({"exit_macs": [1.0, 3.0, 2.0, 4.0]}, ConfigError),  # not cumulative
        ({"exit_macs": [0.0, 1.0, 2.0, 4.0]}, ConfigError),
        ({"budget": float("nan")}, ConfigError),
        ({"score": "entropy"}, ConfigError),
        ({"exit_logits": []}, InputError),
        ({"exit_logits": [torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3, 2)]}, InputError),
        ({"exit_logits": [torch.full((3, 2), float("nan"))] * 3}, InputError),
    ],
)
def test_fit_budgeted_thresholds_errors(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args: dict[str, Any] = {
        "exit_logits": _random_exit_logits(20, 3, 0),
        "exit_macs": MACS,
        "budget": 0.5,
        "backbone_macs": BACKBONE,
    }
    args.update(kwargs)
    with pytest.raises(error):
        fit_budgeted_thresholds(**args)


# --- monotonicity -------------------------------------------------------------------------------


def _exits(policy: ExitPolicy, logits: list[torch.Tensor]) -> torch.Tensor:
    return simulate(policy, logits).exit_index


def _assert_monotone(policies: list[ExitPolicy], logits: list[torch.Tensor], increasing: bool = True) -> None:
    previous = None
    means = []
    for policy in policies:
        exits = _exits(policy, logits)
        if previous is not None:
            moved = exits >= previous if increasing else exits <= previous
            assert bool(moved.all()), f"{policy.describe()} moved a sample the wrong way"
        previous = exits
        means.append(float(exits.double().mean()))
    assert means == (sorted(means) if increasing else sorted(means, reverse=True))
    assert means[0] != means[-1]  # the knob does something here


def test_global_threshold_monotone() -> None:
    logits = _random_exit_logits(300, 5, seed=3)
    _assert_monotone([GlobalThreshold(t) for t in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 0.99, 1.0)], logits)
    _assert_monotone([GlobalThreshold(t, "margin") for t in (0.0, 0.1, 0.3, 0.6, 0.9)], logits)


def test_entropy_threshold_monotone() -> None:
    # a larger entropy threshold stops more samples: the mean exit never increases
    logits = _random_exit_logits(300, 5, seed=3)
    thresholds = (0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 2.5, math.log(10))
    _assert_monotone([EntropyThreshold(t) for t in thresholds], logits, increasing=False)


def test_patience_monotone() -> None:
    g = torch.Generator().manual_seed(4)
    logits = [torch.randn(300, 3, generator=g) + torch.tensor([1.0, 0.0, 0.0]) for _ in range(6)]
    _assert_monotone([Patience(p) for p in range(1, 8)], logits)


def test_single_exit_monotone() -> None:
    _assert_monotone([SingleExit(e) for e in range(6)], _random_exit_logits(10, 5, seed=0))


# --- NaN, knob validation, registry -------------------------------------------------------------

ALL_POLICIES: list[ExitPolicy] = [
    GlobalThreshold(0.5),
    GlobalThreshold(1.0, "max_logit"),
    EntropyThreshold(0.5),
    Patience(1),
    Patience(3),
    BudgetedThreshold([0.5, 0.5, 0.5]),
    SingleExit(0),
    SingleExit(2),
    FullNetwork(),
]


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: json.dumps(p.describe()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_stop_one_rejects_non_finite_logits(policy: ExitPolicy, bad: float) -> None:
    logits = torch.tensor([[2.0, bad, 0.0]])
    with pytest.raises(InputError, match="NaN"):
        policy.stop_one(0, logits, policy.begin(1))
    state = policy.begin(1)
    ok, state = policy.stop_one(0, torch.tensor([[2.0, 1.0, 0.0]]), state)  # finite is fine
    assert isinstance(ok, bool)
    with pytest.raises(InputError, match="NaN"):
        policy.stop_one(1, logits, state)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: json.dumps(p.describe()))
def test_simulate_rejects_nan_logits(policy: ExitPolicy) -> None:
    logits = _random_exit_logits(8, 4, seed=0)
    logits[0][3, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        simulate(policy, logits)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: json.dumps(p.describe()))
def test_batch1_path_equals_batched(policy: ExitPolicy) -> None:
    logits = _random_exit_logits(64, 4, seed=5)
    r = simulate(policy, logits)
    assert run_one(policy, logits) == (r.exit_index.tolist(), r.predictions.tolist())


@pytest.mark.parametrize(
    "make",
    [
        lambda: GlobalThreshold(-0.1),
        lambda: GlobalThreshold(1.5),
        lambda: GlobalThreshold(float("nan")),
        lambda: GlobalThreshold("0.5"),  # type: ignore[arg-type]
        lambda: GlobalThreshold(0.1, "neg_entropy"),  # neg_entropy is <= 0
        lambda: GlobalThreshold(0.5, "top5"),
        lambda: EntropyThreshold(-0.5),
        lambda: EntropyThreshold(float("nan")),
        lambda: Patience(0),
        lambda: Patience(-2),
        lambda: Patience(2.0),  # type: ignore[arg-type]
        lambda: Patience(True),
        lambda: BudgetedThreshold([0.5, float("nan")]),
        lambda: BudgetedThreshold([0.5], score="entropy"),
        lambda: BudgetedThreshold([0.5], budget=-0.5),
        lambda: SingleExit(-1),
        lambda: SingleExit(1.0),  # type: ignore[arg-type]
    ],
)
def test_bad_knobs(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_bad_knob_messages_name_the_range() -> None:
    with pytest.raises(ConfigError, match=r"patience must be an integer >= 1, got -2"):
        Patience(-2)
    with pytest.raises(ConfigError, match=r"in \[0.0, 1.0\], got 1.5"):
        GlobalThreshold(1.5)
    with pytest.raises(ConfigError, match=r"in \[0.0, inf\]"):
        EntropyThreshold(-1)


def test_registry_has_every_policy() -> None:
    assert list_policies() == sorted(
        ["calibrated", "max-softmax", "entropy", "patience", "budgeted", "single-exit", "full"]
    )
    assert isinstance(create_policy("max-softmax", threshold=0.5), GlobalThreshold)
    assert isinstance(create_policy("entropy", threshold=0.5), EntropyThreshold)
    assert isinstance(create_policy("patience", patience=2), Patience)
    assert isinstance(create_policy("budgeted", thresholds=[0.5]), BudgetedThreshold)
    assert isinstance(create_policy("single-exit", exit=1), SingleExit)
    assert isinstance(create_policy("full"), FullNetwork)
    for name in list_policies():
        if name != "calibrated":
            assert create_policy(name, **_KNOBS[name]).name == name


_KNOBS: dict[str, dict[str, Any]] = {
    "max-softmax": {"threshold": 0.5},
    "entropy": {"threshold": 0.5},
    "patience": {"patience": 2},
    "budgeted": {"thresholds": [0.5]},
    "single-exit": {"exit": 1},
    "full": {},
}


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=lambda p: json.dumps(p.describe()))
def test_describe_is_json_ready(policy: ExitPolicy) -> None:
    d = json.loads(json.dumps(policy.describe()))
    assert d["name"] == policy.name


def test_top_level_exports() -> None:
    import bofexits

    for name in ("GlobalThreshold", "EntropyThreshold", "Patience", "BudgetedThreshold", "SingleExit"):
        assert name in bofexits.__all__ and hasattr(bofexits, name)
    for name in ("FullNetwork", "fit_budgeted_thresholds", "simulate", "oracle"):
        assert name in bofexits.__all__ and hasattr(bofexits, name)
