"""The paper's claims checked on hand-made comparisons: supported, partly, not supported."""

from __future__ import annotations

from bofexits.evaluation.claims import check_claims
from bofexits.evaluation.comparison import Comparison, DecisionOverhead, FamilyResult
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import Point
from bofexits.evaluation.timing import Platform


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
