"""The CLI's tables and the report's markdown tables, read from typed results."""

from __future__ import annotations

import dataclasses

from bofexits.evaluation.comparison import Comparison
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.format import met, pct, pct_value, pp, times
from bofexits.reporting.tables import (
    claim_table,
    exits_table,
    format_comparison,
    format_points,
    knee_table,
    knob_table,
    markdown_table,
    point_cell,
)


def test_number_formats() -> None:
    assert (pct(0.123456), pct_value(0.5, 1), pp(-0.0123), times(1.234)) == (
        "12.35%",
        "50.0",
        "-1.23 pp",
        "1.23x",
    )
    assert [met(v) for v in (True, False, None)] == ["yes", "**no**", "n/a"]


def test_format_points(sweep_result: Sweep) -> None:
    lines = format_points(sweep_result).splitlines()
    assert lines[0] == "conditional rule on max_prob; full network 91.00%"
    assert "b16 x" in lines[1]  # the batched column names its batch size
    assert lines[3].split()[:4] == ["0.5", "90.00", "55.0", "0.500"] and lines[3].split()[-4:] == [
        "1.60",
        "0.88",  # efficiency: 1.6x measured over 1 / 55% compute
        "1.44",
        "0.79",
    ]
    assert lines[-1].startswith("speedups: mean time per image")
    untimed = dataclasses.replace(
        sweep_result, timing=None, points=[dataclasses.replace(sweep_result.points[0], timing=None)]
    )
    assert format_points(untimed).splitlines()[2].split()[-4:] == ["nan"] * 4


def test_format_comparison(comparison_result: Comparison) -> None:
    text = format_comparison(comparison_result)
    assert text.splitlines()[0] == "full network 91.00%; simulated from all exits"
    assert "<=25%" in text.splitlines()[1] and "<=40%" in text.splitlines()[1]
    assert text.splitlines()[3].startswith("paper's original rule (rule-max_logit-mean lab")
    row = next(line for line in text.splitlines() if line.startswith("proposed label")).split()
    assert row[2:4] == ["90.70@60%", "0.50"]  # the knee: the cheapest point within 0.5 pp of 91%
    # the best within 25 / 40 / 50 / 75% (exit 1 costs 26%)
    assert row[4:] == ["n/a", "80.00@26%", "90.00@45%", "90.70@60%"]
    assert text.count("claim (") == 3
    assert "At 75% of the MACs: tie with max-softmax (+0.10 pp, 95% CI" in text  # the per-level summary


def test_markdown_tables(sweep_result: Sweep, comparison_result: Comparison) -> None:
    assert markdown_table(["a"], [["1"], ["2"]]) == "| a |\n|---|\n| 1 |\n| 2 |"
    exits = exits_table(sweep_result).splitlines()
    assert exits[2] == "| 1 | 80.00 | 26.0 | 1.00 |" and exits[-1].endswith("| (backbone head) |")
    assert "| batch-16 speedup |" in knob_table(sweep_result).splitlines()[0]
    knees = knee_table(comparison_result)
    assert "| **proposed label** |" in knees and "| <= 75% MACs |" in knees.splitlines()[0]
    assert "| <= 40% MACs | <= 50% MACs |" in knees.splitlines()[0]
    # the paper's original rule, named as such, right below the default
    assert knees.splitlines()[3].startswith("| paper's original rule (rule-max_logit-mean label) | n/a |")
    assert point_cell(None, "beta") == "n/a"
    assert claim_table(comparison_result.claims[0]).startswith("| check | measured | met |")
