"""The report's markdown: a sweep's section (setup, targets, exits, the knob, other rules) and a
policy comparison's section (the paper's claims, knee and matched compute, decision overhead).

Every sentence is written from the numbers it describes.
"""

from __future__ import annotations

from bofexits.evaluation.comparison import BASELINES, Comparison
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.claims import check_claims, matched_compute_summary
from bofexits.reporting.format import met, pct, pct_value
from bofexits.reporting.tables import (
    claim_table,
    exits_table,
    knee_table,
    knob_table,
    markdown_table,
    overhead_table,
)
from bofexits.reporting.targets import check_targets

__all__ = ["render_comparison", "render_markdown"]


def _setup(result: Sweep) -> list[str]:
    """Title, how the network was trained, and where and how it was timed."""
    out = [f"# bofexits report: {result.dataset or 'dataset'}", ""]
    if (train := result.training) is not None:
        out += [
            f"Backbone `{train.backbone}`, {train.epochs} epochs ({train.mode} training"
            f"{': ' + train.phases if train.phases else ''}, {train.seconds / 60:.1f} min), "
            f"calibration on the {train.calibration_split} split. "
            f"Test set: {result.num_test} images, never used for calibration.",
            "",
        ]
    plat, timing = result.platform, result.timing
    threads = timing.threads if timing else plat.threads
    how = (
        f"batch 1 over {timing.batch1_samples} test images, batched over {timing.batched_samples} images in "
        f"batches of {timing.batched_size}."
        if timing
        else "not timed in this run."
    )
    machine = (
        f"GPU {timing.device} (host CPU {plat.processor}), torch {plat.torch}"
        if timing is not None and timing.on_gpu
        else f"{plat.processor}, torch {plat.torch}, {threads} threads"
    )
    if timing is None:
        return out + [f"Machine: {machine}; {how}", ""]
    return out + [
        f"Machine: {machine}. Speedups are ratios to the plain backbone with the same optimisations "
        f"(`AdaptiveRuntime.plain`) timed interleaved in the same run; {how}",
        "",
    ]


def _costs_sentence(result: Sweep) -> str:
    costs, o = result.costs, result.oracle
    return (
        f"Backbone: {costs.backbone_macs / 1e6:.2f} M MACs, {costs.backbone_params / 1e3:.1f} k parameters; all "
        f"exit heads {sum(costs.exit_macs) / 1e6:.3f} M MACs, {costs.exit_params / 1e3:.1f} k parameters. "
        f"Oracle (earliest correct exit): {pct(o.accuracy)} at {pct(o.relative_macs, 1)} MACs."
    )


def _timing_sentence(result: Sweep) -> list[str]:
    if (t := result.timing) is None:
        return []
    return [
        "",
        f"Plain backbone: {t.backbone_batch1_ms:.3f} ms per image at batch 1, {t.backbone_batched_ms:.4f} ms per "
        f"image batched. Batch-1 and batched paths agree on every timed image: {met(t.batch1_paths_agree)}.",
        "",
        *_timing_notes(t.refused, "Every beta ran in the same interleaved rounds"),
    ]


def agreement_sentence(result: Sweep) -> str:
    """Whether the simulation took the runtime's exit everywhere; where not, how many images, at which
    betas, and the cause the numbers show (float rounding at a threshold, or a defect)."""
    found = result.simulation_mismatches
    if result.simulation_matches_runtime or not found:
        return f"{met(result.simulation_matches_runtime)} ({len(result.points)} betas x {result.num_test} images)."
    images = sum(m.images for m in found)
    where = ", ".join(f"{m.images} at beta {m.beta:g}" for m in found)
    gap = max(m.largest_gap for m in found)
    if all(m.rounding for m in found):
        cause = (
            f"every such image's score lies within {gap:.1e} (relative) of its threshold, where the runtime's "
            "float32 arithmetic and the simulation's round differently: a tie, not a defect"
        )
    else:
        cause = (
            f"a score {gap:.1e} (relative) from its threshold took another exit, which rounding cannot explain: "
            "a defect to report"
        )
    return f"{met(False)}: {images} image(s) differ ({where}); {cause}."


def _other_rules(result: Sweep) -> list[str]:
    if not result.comparisons:
        return []
    out = [
        "",
        "## Other scores and variants (accuracy % / MACs %)",
        "",
        f"{result.comparisons_source[:1].upper()}{result.comparisons_source[1:]} (computed once); the simulation "
        "reproduces the real runtime's exit for every test sample at the headline points: "
        f"{agreement_sentence(result)}",
        "",
    ]
    for name, pts in result.comparisons.items():
        cells = ", ".join(
            f"{p.value:g}: {pct_value(p.accuracy)}/{pct_value(p.relative_macs, 0)}" for p in pts
        )
        out.append(f"- `{name}`: {cells}")
    return out


def render_markdown(result: Sweep) -> str:
    """The report text of a sweep: setup, targets, costs, the knob, timing and other rules."""
    targets = [[t.target, t.measured, met(t.met)] for t in check_targets(result)]
    out = [*_setup(result), "## Targets", "", markdown_table(["target", "measured", "met"], targets)]
    out += ["", "## Exits", "", exits_table(result), "", _costs_sentence(result), ""]
    out += [f"## The knob: {result.variant} rule on {result.score} (real early exit)", "", knob_table(result)]
    out += [*_timing_sentence(result), *_other_rules(result)]
    out += [
        "",
        "![accuracy vs compute](accuracy_vs_compute.png)",
        "",
        "![exit distribution](exit_distribution.png)",
        "",
    ]
    return "\n".join(out)


def _comparison_intro(comparison: Comparison) -> list[str]:
    o = comparison.oracle
    budgeted = " and the budgeted thresholds" if comparison.family("budgeted") else ""
    out = [
        "## Policies side by side",
        "",
        f"Every policy over its knob's range on {comparison.num_test} test images ({comparison.source}). Knob "
        f"grids{budgeted} come from the {comparison.num_val}-image validation split, never the "
        f"test set. Full network: {pct(comparison.full_accuracy)}; oracle (earliest correct exit): "
        f"{pct(o.accuracy)} at {pct(o.relative_macs, 1)} MACs.",
        "",
    ]
    if comparison.timing is not None:
        check = comparison.timing.runtime_check
        out += [
            f"Real-runtime check: {check.points} timed points, each run for real on {check.images_per_point} test "
            f"images: {check.mismatched_exits} exits and {check.mismatched_predictions} predictions differ from "
            "the simulation.",
            "",
            *_timing_notes(comparison.timing.refused, "Every timed point ran in the same interleaved rounds"),
        ]
    return out


def _timing_notes(refused: dict[str, str], how: str) -> list[str]:
    """How the points were timed, the intervals, and any timing refused as a measurement fault."""
    out = [
        f"{how}, on the same images, against the plain backbone; each batch-1 speedup has a 95% paired "
        "bootstrap interval over rounds and images, and a speedup whose efficiency exceeds 1.1 was measured "
        "again, then refused.",
        "",
    ]
    if refused:
        out += [f"Timings refused as measurement faults ({len(refused)}):", ""]
        out += [f"- `{name}`: {why}" for name, why in sorted(refused.items())]
        out.append("")
    return out


def _matched_compute(comparison: Comparison) -> list[str]:
    """Per matched-compute level (and the knee): who is ahead and by how much, with its interval."""
    lines = matched_compute_summary(comparison)
    if not lines:
        return []
    ivs = [c.interval for c in comparison.contrasts]
    how = (
        f"Intervals: {ivs[0].confidence:.0%} paired bootstrap over the {ivs[0].images} test images, "
        f"{ivs[0].resamples} resamples, seed {ivs[0].seed}; a difference whose interval includes 0 is a tie."
        if ivs
        else "This file holds no per-image results, so no intervals: re-run `bofexits compare` for them."
    )
    head = (
        f"Matched compute: the proposed rule against the most accurate of {', '.join(BASELINES)} within "
        f"the same share of the MACs. {how}"
    )
    return [head, "", *[f"- {line}." for line in lines], ""]


def _claims(comparison: Comparison) -> list[str]:
    """The claims read again from the comparison's numbers (not the stored text), so a
    `policies.json` written by an older bofexits is explained the way this one explains it."""
    out = ["### The paper's claims on this run", ""]
    for c in check_claims(comparison):
        out += [f"**({c.claim}) {c.statement}: {c.verdict}.**", "", claim_table(c), ""]
        if c.claim == "c":
            out += _matched_compute(comparison)
        if c.why:
            out += [f"Why: {c.why}", ""]
    return out


def _knees(comparison: Comparison) -> list[str]:
    t = comparison.timing
    simulated = [f.name for f in comparison.families if not f.timed]
    if t is None:
        timed = "Not timed in this run: every policy is simulated only."
    else:
        where = f"on GPU {t.device}" if t.on_gpu else f"{t.threads} threads"
        timed = (
            "Speedups are measured against the plain backbone timed in the same rounds "
            f"(batch 1 over {t.batch1_samples} images / batch {t.batched_size}, {where})"
            + (f"; simulated only (dotted in the plot): {', '.join(simulated)}." if simulated else ".")
        )
    return [
        "### Knee and matched compute",
        "",
        f"Knee: the cheapest point within {100 * comparison.max_drop:g} pp of the full network. Matched compute: "
        f"the most accurate point using at most that share of the backbone's MACs. Cells: accuracy % @ MACs %. "
        + timed,
        "",
        knee_table(comparison),
        "",
    ]


def render_comparison(comparison: Comparison) -> str:
    """Markdown for the policy comparison: the paper's claims checked, then the numbers behind them."""
    out = [*_comparison_intro(comparison), *_claims(comparison), *_knees(comparison)]
    if comparison.decision_overhead:
        out += [
            "### Decision overhead (policy only, batch 1, at the knee)",
            "",
            overhead_table(comparison),
            "",
        ]
    out += [
        "![policies](policies.png)",
        "",
        "![exit distributions at matched compute](matched_distributions.png)",
        "",
        "![accuracy at matched compute](accuracy_at_levels.png)",
        "",
        "Every point: `policies.csv` / `policies.json`.",
        "",
    ]
    return "\n".join(out)
