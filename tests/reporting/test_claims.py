"""The paper's claims checked on hand-made comparisons: supported, partly, not supported; and matched
compute read through paired intervals (win, tie, loss)."""

from __future__ import annotations

import numpy as np

from bofexits.evaluation.comparison import (
    Check,
    Comparison,
    ComparisonTiming,
    Contrast,
    DecisionOverhead,
    FamilyResult,
)
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import Point
from bofexits.evaluation.significance import Interval, paired_bootstrap
from bofexits.evaluation.speedup import SpeedInterval
from bofexits.evaluation.timing import Platform
from bofexits.reporting.claims import check_claims, matched_compute_summary


def _point(index: int, acc: float, macs: float, bal: float, fractions: list[float]) -> Point:
    return Point(acc, macs * 10, macs, fractions, bal, index=index)


def _family(name: str, pts: list[Point], proposed: bool = False) -> FamilyResult:
    knob = "beta" if proposed else "threshold"
    for p in pts:
        p.knob, p.value = knob, float(p.index or 0)
    return FamilyResult(name, name, knob, proposed, True, pts, pts[1], {0.5: pts[1], 0.75: pts[2]})


def _comparison(prop_acc: float, prop_bal: float) -> Comparison:
    prop = _family(
        "proposed",
        [
            _point(0, 0.8, 0.3, 0.0, [1.0, 0.0]),
            _point(1, prop_acc, 0.5, prop_bal, [0.5, 0.5]),
            _point(2, 0.9, 0.75, 0.9, [0.3, 0.7]),
            _point(3, 0.9, 1.0, 0.0, [0.0, 1.0]),
        ],
        proposed=True,
    )
    soft = _family(
        "max-softmax",
        [
            _point(0, 0.8, 0.3, 0.0, [1.0, 0.0]),
            _point(1, 0.88, 0.5, 0.6, [0.6, 0.4]),
            _point(2, 0.9, 0.75, 0.9, [0.3, 0.7]),
        ],
    )
    return Comparison(
        num_test=10,
        num_val=10,
        platform=Platform("x86_64", "cpu", 2, "2", 1),
        costs=CostTable([3, 7], [0], [1, 1], 0),  # exit 1 costs 3 of the backbone's 10 MACs
        full_accuracy=0.9,
        oracle=_point(0, 0.9, 0.4, 0.5, [0.5, 0.5]),
        frontier=[(0.3, 0.8), (0.4, 0.9)],
        families=[prop, soft],
        levels=(0.5, 0.75),
        decision_overhead=[DecisionOverhead("proposed", 5.0, 0.005)],
    )


def test_claims_supported_and_not() -> None:
    good = {c.claim: c for c in check_claims(_comparison(prop_acc=0.89, prop_bal=0.95))}
    assert good["a"].verdict == "supported" and good["b"].verdict == "supported"
    assert good["c"].verdict == "supported"  # 0.5 / 0.4 = 1.25x the oracle, within 1.3x
    bad = {c.claim: c for c in check_claims(_comparison(prop_acc=0.87, prop_bal=0.5))}
    assert bad["a"].verdict == "not supported"
    assert any("-1.00 pp" in k.measured for k in bad["c"].checks)


def test_why_is_read_from_the_numbers() -> None:
    bad = {c.claim: c for c in check_claims(_comparison(prop_acc=0.87, prop_bal=0.5))}
    assert bad["a"].why.startswith("Max-softmax reaches the knee's accuracy with balance 0.600 against 0.500")
    assert "trails by at most 1.00 pp (max-softmax, 50% of the MACs)" in bad["c"].why
    good = {c.claim: c for c in check_claims(_comparison(prop_acc=0.89, prop_bal=0.95))}
    assert all(c.why == "" for c in good.values())  # nothing to explain where a claim holds


# --- matched compute: a difference inside the paired interval is a tie ----------------------------


def _with_interval(prop_acc: float, low: float, high: float) -> Comparison:
    """`_comparison` with a stored paired interval at both levels (as `compare_policies` writes them)."""
    comp = _comparison(prop_acc=prop_acc, prop_bal=0.95)
    diff = round(prop_acc - 0.88, 6)
    comp.contrasts = [
        Contrast(
            0.5, False, "max-softmax", 1, 1, Interval(diff, low, high, 0.95, 2000, 0, 10_000, 40, 52, 0.3)
        ),
        Contrast(
            0.75, False, "max-softmax", 2, 2, Interval(0.0, -0.001, 0.001, 0.95, 2000, 0, 10_000, 9, 9, 1.0)
        ),
    ]
    return comp


def _level_check(comp: Comparison, level: str) -> Check:
    claim_c = {c.claim: c for c in check_claims(comp)}["c"]
    return next(k for k in claim_c.checks if k.check.startswith(f"accuracy at {level}"))


def test_a_small_deficit_inside_the_interval_is_a_tie_and_not_a_higher_accuracy() -> None:
    comp = _with_interval(0.8788, -0.0025, 0.0001)
    check = _level_check(comp, "50%")
    assert check.measured == "87.88% vs max-softmax 88.00% (-0.12 pp, 95% CI -0.25..+0.01: tie)"
    assert check.met is False and "significantly above" in check.check and "10000 test images" in check.check
    lines = matched_compute_summary(comp)
    assert lines[0].startswith("At 50% of the MACs: tie with max-softmax (-0.12 pp, 95% CI -0.25..+0.01 pp;")
    assert lines[1].startswith("At 75% of the MACs: tie with max-softmax (+0.00 pp")
    claim_c = {c.claim: c for c in check_claims(comp)}["c"]
    assert claim_c.verdict != "supported" and claim_c.why.startswith(
        "At 50% of the MACs it ties max-softmax (-0.12 pp"
    )


def test_a_significant_deficit_is_a_loss_with_the_leader_named() -> None:
    comp = _with_interval(0.8758, -0.0070, -0.0010)
    check = _level_check(comp, "50%")
    assert check.measured.endswith("(-0.42 pp, 95% CI -0.70..-0.10: loss)") and check.met is False
    assert matched_compute_summary(comp)[0].startswith(
        "At 50% of the MACs: max-softmax ahead of the proposed rule by 0.42 pp (95% CI 0.10..0.70 pp; "
        "the proposed rule 87.58%, max-softmax 88.00%; McNemar p = 0.3: 40 images only the proposed rule"
    )
    why = {c.claim: c for c in check_claims(comp)}["c"].why
    assert (
        why
        == "At 50% of the MACs, max-softmax is ahead by 0.42 pp (95% CI 0.10..0.70 pp over 10000 test images); "
        "at 75% of the MACs it ties max-softmax (+0.00 pp, 95% CI -0.10..+0.10 pp over 10000 test images)."
    )


def test_a_significant_lead_is_a_win() -> None:
    comp = _with_interval(0.8842, 0.0010, 0.0070)
    assert _level_check(comp, "50%").measured.endswith("(+0.42 pp, 95% CI +0.10..+0.70: win)")
    assert matched_compute_summary(comp)[0].startswith(
        "At 50% of the MACs: the proposed rule ahead of max-softmax by 0.42 pp (95% CI 0.10..0.70 pp;"
    )


def test_a_bootstrapped_five_image_lead_reads_as_a_tie() -> None:
    comp = _comparison(prop_acc=0.8805, prop_bal=0.95)
    a, b = np.zeros(10_000, dtype=bool), np.zeros(10_000, dtype=bool)
    a[:8805] = b[:8780] = True
    b[8805:8825] = True  # 25 images only the proposed rule gets right, 20 only max-softmax: +0.05 pp
    comp.contrasts = [Contrast(0.5, False, "max-softmax", 1, 1, paired_bootstrap(a, b))]
    assert _level_check(comp, "50%").measured.endswith(": tie)")
    assert matched_compute_summary(comp)[0].startswith("At 50% of the MACs: tie with max-softmax (+0.05 pp")


def test_files_without_intervals_say_so() -> None:
    comp = _comparison(prop_acc=0.87, prop_bal=0.95)  # no contrasts, as in policies.json before them
    check = _level_check(comp, "50%")
    assert check.check.startswith(
        "accuracy at 50% of the compute >= best of max-softmax, entropy, patience, budgeted"
    )
    assert check.measured == "87.00% vs max-softmax 88.00% (-1.00 pp; no per-image interval stored)"
    assert matched_compute_summary(comp)[0] == (
        "At 50% of the MACs: max-softmax ahead by 1.00 pp (the proposed rule 87.00%, max-softmax 88.00%; "
        "no per-image interval stored: re-run `bofexits compare` for one)"
    )


def test_the_knee_and_unreachable_levels_get_a_line() -> None:
    comp = _with_interval(0.8788, -0.0025, 0.0001)
    comp.levels = (0.25, 0.5, 0.75)
    comp.proposed.at_levels = {0.25: None, **comp.proposed.at_levels}
    knee = comp.proposed.knee
    assert knee is not None
    iv = Interval(0.0, -0.001, 0.001, 0.95, 2000, 0, 10_000, 3, 3, 1.0)
    comp.contrasts.append(Contrast(knee.relative_macs, True, "max-softmax", 1, 1, iv))
    lines = matched_compute_summary(comp)
    assert lines[0] == "At 25% of the MACs: the proposed rule has no point (exit 1 alone costs 30.00%)"
    assert lines[-1].startswith("At the knee (50.0% of the MACs): tie with max-softmax (+0.00 pp")
    assert comp.contrast(knee.relative_macs, knee=True) is comp.contrasts[-1]


def test_explanations_appear_only_when_the_numbers_show_them(comparison_result: Comparison) -> None:
    comp = _comparison(prop_acc=0.87, prop_bal=0.5)
    comp.exit_confidence_medians = [0.85, 0.88, 0.9]  # close together: nothing to say about them
    claims = {c.claim: c for c in check_claims(comp)}
    assert "median" not in claims["a"].why and "confident" not in claims["a"].why
    assert "oracle" not in claims["c"].why  # the knee is within 1.3x of the oracle here
    assert "sends" not in claims["a"].why  # 50% / 60% at exit 1 of two exits piles nothing up
    assert comparison_result.claims[0].why.startswith(
        "The knee sends 50% of the samples to exit 1;"
    )  # of four
    comp.exit_confidence_medians = [0.5, 0.7, 0.9]
    why = {c.claim: c for c in check_claims(comp)}["a"].why
    assert (
        "the early exits are less confident than the later ones: the median max-softmax at exits 1..3" in why
    )
    comp.frontier = [(0.3, 0.8), (0.35, 0.9)]  # the oracle now needs 35% where the knee takes 50%: 1.43x
    assert "the oracle (earliest correct exit) reaches the knee's accuracy with 35.00% of the MACs" in (
        {c.claim: c for c in check_claims(comp)}["c"].why
    )


def _timed_comparison(contrasts: dict[str, SpeedInterval]) -> Comparison:
    from tests.evaluation.conftest import timing

    comp = _comparison(0.89, 0.8)
    prop, soft = comp.families
    assert prop.knee is not None
    prop.knee.timing = timing(1.61)
    soft.points[2].timing = timing(1.97)  # the cheapest max-softmax point reaching the knee's accuracy
    comp.timing = ComparisonTiming(1, 500, 16, 32, 3, 1.0, 0.5, speed_contrasts=contrasts)
    return comp


def _speed_check(comp: Comparison) -> Check:
    claim = next(c for c in check_claims(comp) if c.claim == "c")
    return next(c for c in claim.checks if "max-softmax" in c.check and "batch-1" in c.check)


def test_a_speed_difference_inside_the_noise_is_a_tie_not_a_win_or_a_loss() -> None:
    # Issue 20: 1.13x against 1.97x at nearly the same MACs was read as "slower"; paired, it is noise.
    check = _speed_check(_timed_comparison({"max-softmax": SpeedInterval(0.97, 0.88, 1.07)}))
    assert check.met is False and check.measured.endswith("tie") and "0.88..1.07" in check.measured
    why = next(c for c in check_claims(_timed_comparison({"max-softmax": SpeedInterval(0.97, 0.88, 1.07)}))
               if c.claim == "c").why  # fmt: skip
    assert "max-softmax runs at" not in why  # a tie is not named as the faster rule


def test_a_speed_difference_outside_the_noise_decides() -> None:
    faster = _speed_check(_timed_comparison({"max-softmax": SpeedInterval(1.2, 1.1, 1.3)}))
    assert faster.met is True and faster.measured.endswith("faster")
    comp = _timed_comparison({"max-softmax": SpeedInterval(0.8, 0.7, 0.9)})
    slower = _speed_check(comp)
    assert slower.met is False and slower.measured.endswith("slower")
    why = next(c for c in check_claims(comp) if c.claim == "c").why
    assert "max-softmax runs at 1.97x the backbone's speed" in why


def test_old_files_without_speed_intervals_compare_the_speedups() -> None:
    check = _speed_check(_timed_comparison({}))
    assert check.met is False and "1.61x vs 1.97x" in check.measured
