"""Typed results survive JSON: every `to_dict` / `from_dict` pair round-trips, the files keep
their layout, and another schema version is refused with what to do."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from bofexits._io import jsonable
from bofexits.errors import ConfigError
from bofexits.evaluation.comparison import (
    Check,
    Claim,
    Comparison,
    ComparisonTiming,
    Contrast,
    DecisionOverhead,
    FamilyResult,
    RuntimeCheck,
    save_comparison,
)
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.points import PointTiming
from bofexits.evaluation.significance import Interval
from bofexits.evaluation.sweep import Sweep, SweepTiming, TrainingInfo, save_sweep


def _json(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(jsonable(data)))


def test_sweep_round_trip(sweep_result: Sweep) -> None:
    again = Sweep.from_dict(_json(sweep_result.to_dict()))
    assert again == sweep_result
    assert again.knee() == sweep_result.knee() and again.full_accuracy == 0.91


def test_sweep_keeps_the_results_json_layout(sweep_result: Sweep, tmp_path: Path) -> None:
    data = json.loads(save_sweep(sweep_result, tmp_path).read_text())
    assert data["full_accuracy"] == 0.91 and [p["beta"] for p in data["points"]] == [0.0, 0.5, 1.0]
    assert "timing" not in data["points"][0]  # per-beta timing lives in timing.per_beta, as before
    per_beta = data["timing"]["per_beta"]
    assert [t["beta"] for t in per_beta] == [0.0, 0.5, 1.0] and per_beta[1]["batch1_speedup"] == 1.6
    assert {"batch1_ms", "batched_ms", "batch1_mean_ms", "batch1_p95_ms", "batch1_p99_ms"} <= set(per_beta[0])
    assert data["timing"]["batch1_paths_agree"] is True and data["dataset"] == "fashion-mnist"
    assert data["costs"]["backbone_macs"] == 100 and data["costs"]["macs_at_exit"][0] == 26


def test_comparison_round_trip(comparison_result: Comparison) -> None:
    again = Comparison.from_dict(_json(comparison_result.to_dict()))
    assert again == comparison_result
    prop = again.proposed
    assert (
        prop.knee is not None and prop.knee is prop.points[prop.knee.index or 0]
    )  # the same object, re-linked


def test_comparison_keeps_its_paired_intervals(comparison_result: Comparison) -> None:
    data = _json(comparison_result.to_dict())
    assert [(c["level"], c["knee"], c["rival"]) for c in data["contrasts"]] == [
        (0.4, False, "patience"),
        (0.5, False, "max-softmax"),
        (0.75, False, "max-softmax"),
        (0.6, True, "max-softmax"),
    ]
    assert [c["interval"]["verdict"] for c in data["contrasts"]] == ["loss", "win", "tie", "win"]
    again = Comparison.from_dict(data)
    assert again.contrasts == comparison_result.contrasts
    assert again.contrast(0.5) is again.contrasts[1] and again.contrast(0.25) is None


def test_a_comparison_written_before_the_intervals_still_loads(comparison_result: Comparison) -> None:
    data = _json(comparison_result.to_dict())
    del data["contrasts"]  # policies.json as written before paired intervals existed
    old = Comparison.from_dict(data)
    assert old.contrasts == [] and old.contrast(0.5) is None and old.contrast(0.6, knee=True) is None
    assert old.families == comparison_result.families and old.claims == comparison_result.claims


def test_comparison_files_keep_their_layout(comparison_result: Comparison, tmp_path: Path) -> None:
    json_path, csv_path = save_comparison(comparison_result, tmp_path)
    data = json.loads(json_path.read_text())
    assert set(data["families"][0]["at_levels"]) == {"0.25", "0.4", "0.5", "0.75"}
    assert data["oracle"]["frontier"][0] == [0.26, 0.8] and data["timing"]["runtime_check"]["points"] == 6
    assert data["timing"]["backbone_batched_images_per_s"] == 2000.0
    assert [c["claim"] for c in data["claims"]] == ["a", "b", "c"]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == sum(len(f.points) for f in comparison_result.families)
    assert (
        rows[0]["policy"] == "proposed"
        and rows[0]["batch1_mean_ms"] == ""
        and rows[1]["batch1_mean_ms"] != ""
    )


@pytest.mark.parametrize(
    "value",
    [
        CostTable([1, 2], [1], [3, 4], 5),
        PointTiming(1.0, 2.0, 0.5, 1.5, 1.1, 1.0, 1.5, 2.0, 0.6),
        TrainingInfo("vgg28", 2, "joint", "val", 1.0),
        SweepTiming(1, 2, 3, 4, 5, 1.0, 2.0, batch1_paths_agree=False),
        ComparisonTiming(1, 2, 3, 4, 5, 1.0, 2.0, runtime_check=RuntimeCheck(1, 2, 3, 4)),
        DecisionOverhead("proposed", 1.0, 0.01),
        Claim("a", "statement", [Check("c", "m", None), Check("d", "n", True)], "partly", "why"),
        Interval(-0.0012, -0.0025, 0.0001, 0.95, 2000, 0, 10_000, 40, 52, 0.25),
        Contrast(0.4, False, "budgeted", 3, 7, Interval(0.01, 0.002, 0.02, 0.95, 2000, 0, 1000, 12, 2, 0.01)),
    ],
    ids=lambda v: type(v).__name__,
)
def test_parts_round_trip(value: Any) -> None:
    assert type(value).from_dict(_json(value.to_dict())) == value


def test_family_round_trip(comparison_result: Comparison) -> None:
    fam = comparison_result.families[1]
    assert FamilyResult.from_dict(_json(fam.to_dict())) == fam


@pytest.mark.parametrize("kind", [Sweep, Comparison])
def test_another_schema_version_says_to_run_again(
    kind: Any, sweep_result: Sweep, comparison_result: Comparison
) -> None:
    data = (sweep_result if kind is Sweep else comparison_result).to_dict()
    data["schema_version"] = 0
    command = "bofexits sweep" if kind is Sweep else "bofexits compare"
    with pytest.raises(ConfigError, match=f"schema_version 0 .* re-run `{command}`"):
        kind.from_dict(data)
    del data["schema_version"]
    with pytest.raises(ConfigError, match="no schema_version"):
        kind.from_dict(data)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        kind.from_dict([data])
