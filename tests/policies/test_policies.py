"""Confidence scores, calibration statistics, calibrated thresholds and the policy registry."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from bofexits.errors import ConfigError, InputError
from bofexits.inference.offline import simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.policies import (
    SCORES,
    CalibratedThreshold,
    ExitCalibration,
    ExitPolicy,
    calibrated_thresholds,
    confidence,
    create_policy,
    list_policies,
)
from bofexits.policies.calibrated import CalibrationError

LOGITS = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [-1.0, -5.0, -1.0]])


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_max_logit() -> None:
    assert confidence(LOGITS, "max_logit").tolist() == [3.0, 0.0, -1.0]


def test_max_prob() -> None:
    want = [max(_softmax(r)) for r in LOGITS.tolist()]
    assert confidence(LOGITS, "max_prob").tolist() == pytest.approx(want, abs=1e-6)
    assert want[1] == pytest.approx(1 / 3)


def test_margin() -> None:
    want = []
    for r in LOGITS.tolist():
        p = sorted(_softmax(r), reverse=True)
        want.append(p[0] - p[1])
    got = confidence(LOGITS, "margin").tolist()
    assert got == pytest.approx(want, abs=1e-6)
    assert got[1] == pytest.approx(0.0) and got[2] == pytest.approx(0.0, abs=1e-6)  # ties


def test_neg_entropy() -> None:
    want = [sum(p * math.log(p) for p in _softmax(r)) for r in LOGITS.tolist()]
    got = confidence(LOGITS, "neg_entropy").tolist()
    assert got == pytest.approx(want, abs=1e-6)
    assert got[1] == pytest.approx(-math.log(3), abs=1e-6)


def test_neg_entropy_of_one_hot_is_zero_and_finite() -> None:
    got = confidence(torch.tensor([[1000.0, 0.0, 0.0]]), "neg_entropy")
    assert bool(torch.isfinite(got).all()) and got.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("score", SCORES)
def test_larger_means_more_confident(score: str) -> None:
    sharp = torch.tensor([[4.0, 0.0, 0.0]])
    flat = torch.tensor([[1.0, 0.5, 0.0]])
    assert confidence(sharp, score).item() > confidence(flat, score).item()


def test_unknown_score() -> None:
    with pytest.raises(ConfigError, match="unknown score"):
        confidence(LOGITS, "top5")


def _exit_logits(n: int = 50, exits: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 4, generator=g) * (i + 1) for i in range(exits)]


@pytest.mark.parametrize("score", SCORES)
def test_fit_statistics_match_torch(score: str) -> None:
    logits = _exit_logits()
    cal = ExitCalibration.fit(logits, score)
    scores = torch.stack([confidence(lg, score) for lg in logits]).double()
    assert cal.score == score and cal.num_samples == 50
    assert cal.means.shape == (3,) and cal.quantiles.shape == (3, 1001)
    torch.testing.assert_close(cal.means.double(), scores.mean(1), atol=1e-6, rtol=1e-6)
    for level in (0.0, 0.1, 0.25, 0.5, 0.737, 1.0):
        idx = round(level * 1000)
        want = torch.quantile(scores, level, dim=1)
        torch.testing.assert_close(cal.quantiles[:, idx].double(), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cal.quantiles[:, 0].double(), scores.min(1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(cal.quantiles[:, -1].double(), scores.max(1).values, atol=1e-6, rtol=0)
    assert bool((cal.quantiles.diff(dim=1) >= 0).all())


def test_fit_errors() -> None:
    with pytest.raises(ConfigError, match="unknown score"):
        ExitCalibration.fit(_exit_logits(), "entropy")
    with pytest.raises(InputError):
        ExitCalibration.fit([])
    with pytest.raises(InputError):
        ExitCalibration.fit([torch.zeros(0, 4)])
    bad = _exit_logits()
    bad[1][3, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        ExitCalibration.fit(bad)
    bad[1][3, 2] = float("inf")
    with pytest.raises(InputError):
        ExitCalibration.fit(bad)


def test_calibration_dict_round_trip() -> None:
    cal = ExitCalibration.fit(_exit_logits(), "margin")
    back = ExitCalibration.from_dict(cal.to_dict())
    assert back.score == "margin" and back.num_samples == cal.num_samples
    torch.testing.assert_close(back.means, cal.means)
    torch.testing.assert_close(back.quantiles, cal.quantiles)


def test_accuracy_variant_thresholds_rise_with_beta_and_mean_what_they_say() -> None:
    """On the calibration samples, samples stopped at beta are right about beta of the time or more."""
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (4000,), generator=g)
    logits = []
    for sharp in (1.0, 2.0, 4.0):  # later exits: more often right
        lg = torch.randn(4000, 4, generator=g)
        lg[torch.arange(4000), labels] += sharp * torch.rand(4000, generator=g) * 2
        logits.append(lg)
    cal = ExitCalibration.fit(logits, "max_prob", labels)
    assert cal.accuracy is not None and cal.accuracy.shape == (3, 1001)
    assert bool((cal.accuracy[:, 1:] >= cal.accuracy[:, :-1]).all())
    assert calibrated_thresholds(cal, 0.0, "accuracy") == [float("-inf")] * 3
    scores = confidence(logits[0], "max_prob")
    right = logits[0].argmax(1) == labels
    for beta in (0.5, 0.8, 0.9):
        t = calibrated_thresholds(cal, beta, "accuracy")[0]
        stopped = scores >= t
        assert stopped.any() and float(right[stopped].float().mean()) >= beta - 0.02
        below = (scores < t) & (scores >= t - 0.05)  # just under the threshold: less accurate than beta
        if below.sum() > 50:
            assert float(right[below].float().mean()) < beta + 0.02
    # A sure exit stops everything at any beta < 1; a useless one stops nothing at beta above chance.
    perfect = [logits[0].clone()]
    perfect[0][torch.arange(4000), labels] = 50.0
    sure = ExitCalibration.fit(perfect, "max_prob", labels)
    assert calibrated_thresholds(sure, 0.99, "accuracy")[0] <= float(confidence(perfect[0], "max_prob").min())


def test_accuracy_variant_needs_labels_and_round_trips() -> None:
    logits = _exit_logits()
    no_labels = ExitCalibration.fit(logits, "max_prob")
    assert no_labels.accuracy is None
    with pytest.raises(ConfigError, match="no statistics for the accuracy variant"):
        calibrated_thresholds(no_labels, 0.5, "accuracy")
    labels = torch.zeros(50, dtype=torch.long)
    cal = ExitCalibration.fit(logits, "max_prob", labels)
    back = ExitCalibration.from_dict(cal.to_dict())
    assert back.accuracy is not None and cal.accuracy is not None
    torch.testing.assert_close(back.accuracy, cal.accuracy)
    with pytest.raises(InputError, match="labels must be a \\(50,\\) tensor"):
        ExitCalibration.fit(logits, "max_prob", torch.zeros(49, dtype=torch.long))
    data = cal.to_dict()
    data["accuracy"] = [row[::-1] for row in data["accuracy"]]
    with pytest.raises(CalibrationError, match="decrease with beta"):
        ExitCalibration.from_dict(data)


def _cal(means: list[float], quantiles: torch.Tensor | None = None) -> ExitCalibration:
    q = quantiles if quantiles is not None else torch.zeros(len(means), 1001)
    return ExitCalibration("max_prob", torch.tensor(means), q, 10)


def test_mean_thresholds() -> None:
    cal = _cal([0.4, 0.5, 0.8])
    assert calibrated_thresholds(cal, 1.0) == pytest.approx([0.4, 0.5, 0.8])
    assert calibrated_thresholds(cal, 1.5, "mean") == pytest.approx([0.6, 0.75, 1.2])
    assert calibrated_thresholds(cal, 0) == [0.0, 0.0, 0.0]


def test_quantile_thresholds() -> None:
    scores = torch.rand(2, 77, generator=torch.Generator().manual_seed(0)).double()
    cal = ExitCalibration.fit([torch.stack([s, torch.zeros_like(s)], 1).float() for s in scores], "max_logit")
    scores = torch.stack([torch.stack([s, torch.zeros_like(s)], 1).float().amax(1) for s in scores]).double()
    assert calibrated_thresholds(cal, 0.0, "quantile") == [float("-inf")] * 2
    # beta 1 is the full network by definition (+inf), not the top score, which a test score may equal
    assert calibrated_thresholds(cal, 1.0, "quantile") == [float("inf")] * 2
    top = scores.max(1).values.tolist()
    assert calibrated_thresholds(cal, 0.9999, "quantile") == pytest.approx(top, abs=2e-3)
    for beta in (0.5, 0.25, 0.9):
        want = torch.quantile(scores, beta, dim=1).tolist()
        assert calibrated_thresholds(cal, beta, "quantile") == pytest.approx(want, abs=1e-6)


def test_quantile_thresholds_interpolate_between_grid_levels() -> None:
    q = torch.linspace(0, 10, 1001).repeat(2, 1)
    q[1] *= 2
    cal = _cal([1.0, 1.0], q)
    assert calibrated_thresholds(cal, 0.0005, "quantile") == pytest.approx([0.005, 0.01], abs=1e-6)
    assert calibrated_thresholds(cal, 0.3333, "quantile") == pytest.approx([3.333, 6.666], abs=1e-5)


@pytest.mark.parametrize(
    "beta, variant",
    [
        (-0.1, "mean"),
        (float("nan"), "mean"),
        ("1", "mean"),
        (None, "mean"),
        (-0.01, "quantile"),
        (1.01, "quantile"),
        (float("nan"), "quantile"),
        (torch.tensor(0.5), "quantile"),
    ],
)
def test_bad_beta(beta: Any, variant: str) -> None:
    with pytest.raises(ConfigError, match="beta"):
        calibrated_thresholds(_cal([0.5, 0.5]), beta, variant)


@pytest.mark.parametrize("means", [[0.5, 0.0], [-1.0, 2.0]])
def test_mean_variant_needs_positive_means(means: list[float]) -> None:
    with pytest.raises(ConfigError, match="positive mean"):
        calibrated_thresholds(_cal(means), 1.0, "mean")
    calibrated_thresholds(_cal(means), 0.5, "quantile")  # the quantile variant does not care


def test_unknown_variant() -> None:
    with pytest.raises(ConfigError, match="unknown variant"):
        calibrated_thresholds(_cal([0.5]), 1.0, "median")
    with pytest.raises(ConfigError):
        CalibratedThreshold(_cal([0.5]), 1.0, "median")


def test_calibrated_threshold_stop() -> None:
    cal = ExitCalibration("max_logit", torch.tensor([2.0, 1.0]), torch.zeros(2, 1001), 10)
    policy = CalibratedThreshold(cal, beta=1.5)
    assert policy.thresholds == [3.0, 1.5]
    logits = torch.tensor([[3.0, 0.0], [2.9, 0.0], [0.0, 4.0], [1.5, 1.0]])
    state = object()
    stop, back = policy.stop(0, logits, state)
    assert stop.dtype == torch.bool
    assert stop.tolist() == [True, False, True, False]  # equality stops
    assert back is state
    assert policy.stop(1, logits, None)[0].tolist() == [True, True, True, True]


def test_calibrated_threshold_uses_calibration_score() -> None:
    cal = ExitCalibration.fit(_exit_logits(exits=2), "max_prob")
    policy = CalibratedThreshold(cal, beta=1.0)
    logits = _exit_logits(20, 2, seed=5)[0]
    want = torch.softmax(logits, 1).amax(1) >= cal.means[0]
    assert torch.equal(policy.stop(0, logits, None)[0], want)
    d = policy.describe()
    assert d["name"] == "calibrated" and d["score"] == "max_prob" and d["beta"] == 1.0
    assert d["thresholds"] == pytest.approx(cal.means.tolist())


def test_registry() -> None:
    assert {"calibrated", "max-softmax", "entropy", "patience", "budgeted", "single-exit", "full"} <= set(
        list_policies()
    )
    cal = _cal([0.5, 0.25])
    policy = create_policy("calibrated", calibration=cal, beta=2.0)
    assert isinstance(policy, CalibratedThreshold) and policy.thresholds == [1.0, 0.5]
    with pytest.raises(ConfigError, match="unknown policy"):
        create_policy("no-such-policy")


def test_base_policy_keep_and_begin() -> None:
    policy = ExitPolicy()
    assert policy.begin(4) is None
    state = torch.tensor([10, 11, 12, 13])
    assert policy.keep(state, torch.tensor([True, False, True, False])).tolist() == [10, 12]
    assert policy.keep("x", torch.tensor([True])) == "x"
    assert policy.describe() == {"name": "policy"}
    with pytest.raises(NotImplementedError):
        policy.stop(0, torch.zeros(1, 2), None)


@pytest.mark.parametrize(
    "variant, betas",
    [
        ("mean", [0.0, 0.5, 0.9, 1.0, 1.05, 1.2, 1.5, 3.0]),
        ("quantile", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]),
    ],
)
def test_raising_beta_never_lowers_exit_index(
    tiny_net_factory,
    images,
    variant: str,
    betas: list[float],  # type: ignore[no-untyped-def]
) -> None:
    net = tiny_net_factory(seed=3)
    with torch.no_grad():
        cal = ExitCalibration.fit(net(images(64, seed=2))[:-1], "max_prob")
    x = images(48, seed=3)
    previous = None
    means = []
    for beta in betas:
        r = AdaptiveRuntime(net, CalibratedThreshold(cal, beta, variant))(x)
        if previous is not None:
            assert bool((r.exit_index >= previous).all()), f"beta {beta} moved a sample to an earlier exit"
        previous = r.exit_index
        means.append(float(r.exit_index.double().mean()))
    assert means == sorted(means)
    assert means[0] < means[-1]  # the knob does something on this model


@pytest.mark.parametrize("score", ["max_logit", "max_prob", "margin", "neg_entropy"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_batch1_rejects_any_non_finite_logit(score: str, bad: float) -> None:
    # A -inf in a non-maximal logit leaves max_prob finite; it must still be refused, as in batches.
    cal = ExitCalibration.fit(_exit_logits(), score)
    policy = CalibratedThreshold(cal, 0.5, "quantile")
    logits = torch.tensor([[3.0, 0.0, 1.0, 0.5]])
    logits[0, 1] = bad
    with pytest.raises(InputError, match="NaN or inf"):
        policy.stop_one(0, logits, None)
    with pytest.raises(InputError, match="NaN or inf"):
        simulate(policy, [logits, logits, logits, logits])  # 3 early exits + the final one


def test_calibration_for_another_exit_count_is_refused() -> None:
    cal = ExitCalibration.fit(_exit_logits(exits=2), "max_prob")
    with pytest.raises(ConfigError, match="2 thresholds .* 3 early exits"):
        simulate(CalibratedThreshold(cal, 0.5, "quantile"), _exit_logits(exits=4))


@pytest.mark.parametrize("field", ["means", "quantiles", "conditional"])
def test_nan_calibration_statistics_are_refused_on_load(field: str) -> None:
    data = ExitCalibration.fit(_exit_logits(), "max_prob").to_dict()
    data[field][0] = [float("nan")] * len(data[field][0]) if isinstance(data[field][0], list) else float("nan")
    with pytest.raises(ConfigError, match=f"calibration {field} holds .* NaN"):
        ExitCalibration.from_dict(data)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"means": "high"}, "'means' is not a table of numbers"),
        ({"quantiles": [[0.5] * 3] * 3}, r"quantiles must have shape \(3, 1001\)"),
        ({"score": "vibes"}, "score 'vibes'"),
        ({"num_samples": -1}, "num_samples must be a positive integer"),
    ],
)
def test_malformed_calibration_is_refused_naming_the_field(change: dict[str, Any], match: str) -> None:
    data = {**ExitCalibration.fit(_exit_logits(), "max_prob").to_dict(), **change}
    with pytest.raises(ConfigError, match=match):
        ExitCalibration.from_dict(data)


def test_reversed_quantile_table_is_refused() -> None:
    data = ExitCalibration.fit(_exit_logits(), "max_prob").to_dict()
    data["quantiles"][1] = data["quantiles"][1][::-1]
    with pytest.raises(ConfigError, match=r"quantiles decrease with the level at early exits \[1\]"):
        ExitCalibration.from_dict(data)
