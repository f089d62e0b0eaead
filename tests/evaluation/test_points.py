"""Choosing points: the knee, the cheapest point reaching an accuracy, the best within a compute
level, each against a brute-force reference over every point; and a point's JSON round trip."""

from __future__ import annotations

import json
import random

import pytest

from bofexits._io import jsonable
from bofexits.errors import ConfigError
from bofexits.evaluation.points import (
    LEVELS,
    MAX_DROP,
    Point,
    at_compute,
    at_levels,
    cheapest_reaching,
    knee_point,
)


def _random_points(rng: random.Random, n: int) -> list[Point]:
    # Accuracies on a coarse grid so that ties (which the rules break) happen often.
    return [
        Point(
            rng.randint(70, 90) / 100, 0.0, rng.randint(20, 100) / 100, [1.0], 0.0, knob="t", value=i, index=i
        )
        for i in range(n)
    ]


def _brute_cheapest(points: list[Point], acc: float) -> Point | None:
    best = None
    for p in points:  # first of the cheapest among those reaching `acc`
        if p.accuracy >= acc - 1e-12 and (best is None or p.relative_macs < best.relative_macs):
            best = p
    return best


def _brute_best_within(points: list[Point], level: float) -> Point | None:
    best = None
    for p in points:  # most accurate within the level; on ties the cheaper, then the first
        if p.relative_macs > level + 1e-9:
            continue
        if best is None or (p.accuracy, -p.relative_macs) > (best.accuracy, -best.relative_macs):
            best = p
    return best


@pytest.mark.parametrize("seed", range(20))
def test_selection_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    pts = _random_points(rng, rng.randint(1, 12))
    full = rng.randint(75, 92) / 100
    assert knee_point(pts, full) is _brute_cheapest(pts, full - MAX_DROP)
    for acc in (0.7, 0.8, full, 0.95):
        assert cheapest_reaching(pts, acc) is _brute_cheapest(pts, acc)
    for level in (*LEVELS, 0.1, 1.0):
        assert at_compute(pts, level) is _brute_best_within(pts, level)
    assert at_levels(pts) == {lv: _brute_best_within(pts, lv) for lv in LEVELS}


def test_knee_tolerance_is_max_drop() -> None:
    pts = [Point(0.9 - MAX_DROP, 0.0, 0.4, [1.0], 0.0), Point(0.9 - MAX_DROP - 0.001, 0.0, 0.3, [1.0], 0.0)]
    assert knee_point(pts, 0.9) is pts[0]  # just within the tolerance; the cheaper one is just outside
    assert knee_point(pts, 0.9, max_drop=MAX_DROP + 0.001) is pts[1]
    assert knee_point([], 0.9) is None


def test_point_round_trip_through_json() -> None:
    p = Point(
        0.9, 50.0, 0.5, [0.5, 0.5], 1.0, knob="beta", value=0.4, index=3, thresholds=[float("inf"), 0.2]
    )
    data = json.loads(json.dumps(jsonable(p.to_dict())))
    assert data["beta"] == 0.4 and data["knob"] == "beta" and data["thresholds"][0] == "inf"
    assert Point.from_dict(data) == p
    oracle = Point(0.95, 40.0, 0.4, [1.0, 0.0], 0.0)
    assert Point.from_dict(oracle.to_dict()) == oracle and "knob" not in oracle.to_dict()


@pytest.mark.parametrize("version", [None, 0, 2])
def test_point_refuses_another_schema_version(version: int | None) -> None:
    data = Point(0.9, 50.0, 0.5, [1.0], 0.0).to_dict()
    data.pop("schema_version") if version is None else data.update(schema_version=version)
    with pytest.raises(ConfigError, match="schema_version.*re-run"):
        Point.from_dict(data)


def test_point_names_a_missing_field() -> None:
    data = Point(0.9, 50.0, 0.5, [1.0], 0.0).to_dict()
    del data["balance"]
    with pytest.raises(ConfigError, match="lacks the field 'balance'"):
        Point.from_dict(data)
