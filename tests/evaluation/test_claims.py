"""The paper's claims checked on hand-made comparisons: supported, partly, not supported."""

from __future__ import annotations

from typing import Any

from bofexits.evaluation.claims import check_claims


def _point(
    index: int, acc: float, macs: float, bal: float, fractions: list[float], **kw: Any
) -> dict[str, Any]:
    return {
        "index": index,
        "accuracy": acc,
        "relative_macs": macs,
        "balance": bal,
        "exit_fractions": fractions,
        **kw,
    }


def _comparison(prop_acc: float, prop_bal: float) -> dict[str, Any]:
    def fam(name: str, pts: list[dict[str, Any]], proposed: bool = False) -> dict[str, Any]:
        knob = "beta" if proposed else "threshold"
        for p in pts:
            p.setdefault(knob, p["index"])
        return {
            "name": name,
            "knob": knob,
            "proposed": proposed,
            "points": pts,
            "knee": pts[1],
            "at_levels": {"0.5": pts[1], "0.75": pts[2]},
        }

    prop = fam(
        "proposed",
        [
            _point(0, 0.8, 0.3, 0.0, [1.0, 0.0]),
            _point(1, prop_acc, 0.5, prop_bal, [0.5, 0.5]),
            _point(2, 0.9, 0.75, 0.9, [0.3, 0.7]),
            _point(3, 0.9, 1.0, 0.0, [0.0, 1.0]),
        ],
        proposed=True,
    )
    soft = fam(
        "max-softmax",
        [
            _point(0, 0.8, 0.3, 0.0, [1.0, 0.0]),
            _point(1, 0.88, 0.5, 0.6, [0.6, 0.4]),
            _point(2, 0.9, 0.75, 0.9, [0.3, 0.7]),
        ],
    )
    return {
        "families": [prop, soft],
        "full_accuracy": 0.9,
        "costs": {"macs_at_exit": [3, 10], "backbone_macs": 10},
        "oracle": {"frontier": [[0.3, 0.8], [0.4, 0.9]]},
        "decision_overhead": [
            {"policy": "proposed", "us_per_decision": 5.0, "fraction_of_backbone_batch1": 0.005}
        ],
    }


def test_claims_supported_and_not() -> None:
    good = {c["claim"]: c for c in check_claims(_comparison(prop_acc=0.89, prop_bal=0.95))}
    assert good["a"]["verdict"] == "supported" and good["b"]["verdict"] == "supported"
    assert good["c"]["verdict"] == "supported"  # 0.5 / 0.4 = 1.25x the oracle, within 1.3x
    bad = {c["claim"]: c for c in check_claims(_comparison(prop_acc=0.87, prop_bal=0.5))}
    assert bad["a"]["verdict"] == "not supported"
    assert any("-1.00 pp" in k["measured"] for k in bad["c"]["checks"])
