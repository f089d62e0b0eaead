"""The report's text: sections from typed results, every sentence written from its numbers."""

from __future__ import annotations

import dataclasses

from bofexits.evaluation.comparison import Comparison
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.markdown import render_comparison, render_markdown
from bofexits.reporting.targets import TARGET_FINAL_ACC, check_targets


def test_sweep_section(sweep_result: Sweep) -> None:
    text = render_markdown(sweep_result)
    assert text.startswith(
        "# bofexits report: fashion-mnist\n\nBackbone `vgg28`, 3 epochs (two-phase training, 1.5 min)"
    )
    assert "batch 1 over 3 test images, batched over 100 images in batches of 16." in text
    assert "## Targets" in text and "## The knob: conditional rule on max_prob (real early exit)" in text
    assert "Oracle (earliest correct exit): 95.00% at 40.0% MACs." in text
    assert "- `max_prob/mean`: 1: 85.00/50" in text
    phased = [{"epoch": i + 1, "phase": p} for i, p in enumerate(["backbone", "exits", "exits", "finetune"])]
    trained = dataclasses.replace(sweep_result.training, epochs=4, history=phased)
    assert "4 epochs (two-phase training: 1 backbone, 2 exits, 1 finetune, 1.5 min)" in render_markdown(
        dataclasses.replace(sweep_result, training=trained)
    )
    untimed = dataclasses.replace(sweep_result, timing=None, training=None, dataset=None)
    text = render_markdown(untimed)
    assert (
        "not timed in this run" in text
        and "Plain backbone:" not in text
        and "# bofexits report: dataset" in text
    )


def test_comparison_section_reads_its_tolerance_and_timing(comparison_result: Comparison) -> None:
    text = render_comparison(comparison_result)
    assert "Knee: the cheapest point within 0.5 pp of the full network." in text
    assert "Real-runtime check: 6 timed points, each run for real on 32 test images" in text
    assert "(batch 1 over 3 images / batch 16, 1 threads)" in text
    assert text.count("**(") == 3 and "### Decision overhead" in text
    looser = dataclasses.replace(comparison_result, max_drop=0.01, timing=None, decision_overhead=[])
    text = render_comparison(looser)
    assert "within 1 pp of the full network" in text and "Real-runtime" not in text
    assert "Not timed in this run: every policy is simulated only." in text and "Speedups are" not in text


def test_targets(sweep_result: Sweep) -> None:
    final, heads, macs, speed = check_targets(sweep_result)
    assert final.target == f"final exit test accuracy >= {100 * TARGET_FINAL_ACC:.1f}%"
    assert final.measured == "91.00%" and final.met is False
    assert heads.measured == "3.00% MACs, 5.00% params" and heads.met is True
    # the knee: the only beta within 0.5 pp of 91% is the last one, at 103% of the MACs
    assert macs.target == "knee (cheapest beta within 0.5 pp of final) uses <= 60% of MACs"
    assert macs.measured == "beta=1: 91.00% at 103.0%" and macs.met is False
    assert speed.measured == "0.97x" and speed.met is False


def test_the_machine_line_names_the_device_and_the_fair_baseline(
    sweep_result: Sweep, comparison_result: Comparison
) -> None:
    assert sweep_result.timing is not None and comparison_result.timing is not None
    text = render_markdown(sweep_result)
    assert f"Machine: {sweep_result.platform.processor}, torch {sweep_result.platform.torch}, " in text
    assert "ratios to the plain backbone with the same optimisations (`AdaptiveRuntime.plain`)" in text
    assert "nn.Sequential" not in text
    gpu = dataclasses.replace(
        sweep_result, timing=dataclasses.replace(sweep_result.timing, device="NVIDIA H200")
    )
    assert (
        f"Machine: GPU NVIDIA H200 (host CPU {sweep_result.platform.processor}), torch "
        in render_markdown(gpu)
    )
    timing = dataclasses.replace(comparison_result.timing, device="NVIDIA H200")
    text = render_comparison(dataclasses.replace(comparison_result, timing=timing))
    assert "(batch 1 over 3 images / batch 16, on GPU NVIDIA H200)" in text


def test_claims_state_who_is_ahead_at_each_level(comparison_result: Comparison) -> None:
    text = render_comparison(comparison_result)
    claim_c = text[text.index("**(c)") : text.index("### Knee and matched compute")]
    assert "Intervals: 95% paired bootstrap over the 1000 test images, 2000 resamples, seed 0" in claim_c
    assert "| 80.00% vs patience 85.00% (-5.00 pp, 95% CI -6.40..-3.70: loss) | **no** |" in claim_c
    assert "- At 25% of the MACs: the proposed rule has no point (exit 1 alone costs 26.00%)." in claim_c
    assert (
        "- At 40% of the MACs: patience ahead of the proposed rule by 5.00 pp (95% CI 3.70..6.40 pp;"
        in claim_c
    )
    assert "- At 75% of the MACs: tie with max-softmax (+0.10 pp, 95% CI -0.40..+0.60 pp;" in claim_c
    assert "- At the knee (60.0% of the MACs): the proposed rule ahead of max-softmax by 1.70 pp" in claim_c
    assert claim_c.index("- At 25%") < claim_c.index("Why: At 40% of the MACs, patience is ahead by 5.00 pp")
    old = dataclasses.replace(comparison_result, contrasts=[])  # a policies.json from before the intervals
    text = render_comparison(old)
    assert "This file holds no per-image results, so no intervals" in text
    assert "- At 75% of the MACs: the proposed rule ahead by 0.10 pp (the proposed rule 90.70%," in text


def test_the_papers_original_rule_sits_beside_the_default(comparison_result: Comparison) -> None:
    text = render_comparison(comparison_result)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    first = next(i for i, r in enumerate(rows) if r.startswith("| **proposed label**"))
    assert rows[first + 1].startswith("| paper's original rule (rule-max_logit-mean label) |")
    assert "simulated only (dotted in the plot): rule-max_logit-mean." in text


def test_stored_claim_text_is_read_again_from_the_numbers(comparison_result: Comparison) -> None:
    # policies.json from an older bofexits: its stored "why" held a fixed sentence and no intervals
    stale = [
        dataclasses.replace(c, why="a global threshold piles samples up at one end only when ...")
        for c in comparison_result.claims
    ]
    old = dataclasses.replace(comparison_result, contrasts=[], claims=stale)
    text = render_comparison(old)
    assert "piles samples up at one end only when" not in text
    assert "| 80.00% vs patience 85.00% (-5.00 pp; no per-image interval stored) | **no** |" in text
