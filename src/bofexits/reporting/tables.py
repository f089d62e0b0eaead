"""Tables of a sweep and a policy comparison: plain-text ones for the CLI, markdown ones for the report.

Each table is built from the typed results (`Sweep`, `Comparison`), so a renamed field is a
type error here rather than a blank cell in a report.
"""

from __future__ import annotations

from collections.abc import Sequence

from bofexits.evaluation.comparison import Claim, Comparison, FamilyResult
from bofexits.evaluation.points import Point
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.claims import matched_compute_summary
from bofexits.reporting.format import fractions, met, pct, pct_value, times, times_interval

__all__ = [
    "PAPER_RULE",
    "claim_table",
    "exits_table",
    "format_comparison",
    "format_points",
    "knee_table",
    "knob_table",
    "markdown_table",
    "overhead_table",
    "point_cell",
    "policy_label",
    "table_order",
]

PAPER_RULE = "rule-max_logit-mean"
"""The family of the paper's original rule (mean rule on max_logit), shown under that name in every
comparison table so it can be read beside the default configuration."""
_PAPER_LABEL = "mean rule on max_logit"  # the label `policy_families` gives that configuration

_NAN = float("nan")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table.

    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _level_header(level: float) -> str:
    return f"<= {level:.0%} MACs"


# --- the command line -----------------------------------------------------------------------------


def format_points(result: Sweep) -> str:
    """A readable table of a sweep: one row per knob value."""
    batched = f"b{result.timing.batched_size} x" if result.timing else "bN x"
    rows = [
        f"{result.variant} rule on {result.score}; full network {pct(result.full_accuracy)}",
        f"{'beta':>6} {'acc %':>7} {'MACs %':>7} {'balance':>7}  {'exit fractions':<26} {'b1 x':>6} {'eff':>5} "
        f"{batched:>6} {'eff':>5}",
    ]
    for p in result.points:
        t = p.timing
        rows.append(
            f"{p.value:>6g} {pct_value(p.accuracy):>7} {pct_value(p.relative_macs, 1):>7} "
            f"{p.balance:>7.3f}  {fractions(p.exit_fractions, sep=' '):<26} "
            f"{t.batch1_speedup if t else _NAN:>6.2f} {p.batch1_efficiency:>5.2f} "
            f"{t.batched_speedup if t else _NAN:>6.2f} {p.batched_efficiency:>5.2f}"
        )
    rows.append(
        "speedups: mean time per image vs the plain backbone, interleaved; eff = speedup / compute speedup"
    )
    return "\n".join(rows)


def policy_label(fam: FamilyResult) -> str:
    """A family's label in tables: the paper's original rule says that it is.

    >>> fam = FamilyResult(PAPER_RULE, "mean rule on max_logit", "beta", False, False, [], None, {})
    >>> policy_label(fam)
    "paper's original rule (mean rule on max_logit)"
    """
    if fam.name == PAPER_RULE:
        return f"paper's original rule ({fam.label})"
    if fam.proposed and fam.label == f"proposed: {_PAPER_LABEL}":  # the default is the paper's own rule
        return f"proposed: paper's original rule ({_PAPER_LABEL})"
    return fam.label


def table_order(families: Sequence[FamilyResult]) -> list[FamilyResult]:
    """The proposed rule first, the paper's original rule right after it, then the others as they come."""
    rank = {PAPER_RULE: 1}
    return sorted(families, key=lambda f: 0 if f.proposed else rank.get(f.name, 2))


def _short_cell(p: Point | None) -> str:
    return "n/a" if p is None else f"{pct_value(p.accuracy)}@{pct(p.relative_macs, 0)}"


def format_comparison(comparison: Comparison) -> str:
    """A readable summary of a policy comparison: knee and matched compute per policy, then the claims."""
    head = f"{'policy':<46} {'knee acc@MACs':>14} {'bal':>5} " + " ".join(
        f"{'<=' + format(lv, '.0%'):>11}" for lv in comparison.levels
    )
    rows = [f"full network {pct(comparison.full_accuracy)}; simulated from all exits", head]
    for fam in table_order(comparison.families):
        knee = fam.knee
        rows.append(
            f"{policy_label(fam)[:46]:<46} {_short_cell(knee):>14} {knee.balance if knee else _NAN:>5.2f} "
            + " ".join(f"{_short_cell(fam.at_levels[lv]):>11}" for lv in comparison.levels)
        )
    rows += [f"claim ({c.claim}) {c.statement}: {c.verdict}" for c in comparison.claims]
    return "\n".join(rows + matched_compute_summary(comparison))


# --- the report: a sweep ----------------------------------------------------------------------------


def exits_table(result: Sweep) -> str:
    """Each exit alone: accuracy, what leaving there costs, and its head's own MACs."""
    costs = result.costs
    bb, at_exit = costs.backbone_macs, costs.macs_at_exit()
    rows = []
    for i, acc in enumerate(result.per_exit_accuracy):
        head = pct_value(costs.exit_macs[i] / bb) if i < len(costs.exit_macs) else "(backbone head)"
        rows.append([str(i + 1), pct_value(acc), pct_value(at_exit[i] / bb, 1), head])
    return markdown_table(
        ["exit", "accuracy % (alone)", "MACs % when leaving here", "exit head MACs %"], rows
    )


def knob_table(result: Sweep) -> str:
    """One row per beta: accuracy, compute, where samples left, and the timing."""
    rows = []
    for p in result.points:
        t = p.timing
        rows.append(
            [
                f"{p.value:g}",
                pct_value(p.accuracy),
                pct_value(p.relative_macs, 1),
                fractions(p.exit_fractions),
                f"{p.balance:.3f}",
                f"{t.batch1_mean_ms if t else _NAN:.3f}",
                f"{t.batch1_p50_ms if t else _NAN:.3f} / {t.batch1_p95_ms if t else _NAN:.3f} / "
                f"{t.batch1_p99_ms if t else _NAN:.3f}",
                times(p.compute_speedup),
                times_interval(t.batch1_speedup, t.batch1_speedup_low, t.batch1_speedup_high)
                if t
                else times(_NAN),
                f"{p.batch1_efficiency:.2f}",
                times(t.batched_speedup if t else _NAN),
                f"{p.batched_efficiency:.2f}",
            ]
        )
    size = result.timing.batched_size if result.timing else 0
    header = ["beta", "acc %", "MACs %", "exit fractions", "balance", "batch-1 mean ms", "p50 / p95 / p99 ms"]
    header += ["compute speedup", "batch-1 speedup (95% CI)", "efficiency"]
    return markdown_table([*header, f"batch-{size} speedup", "efficiency"], rows)


# --- the report: a comparison -----------------------------------------------------------------------


def point_cell(p: Point | None, knob: str) -> str:
    """`accuracy % @ MACs% (knob=value, bal balance)`, or n/a."""
    if p is None:
        return "n/a"
    return f"{pct_value(p.accuracy)} @ {pct(p.relative_macs, 1)} ({knob}={p.value:.4g}, bal {p.balance:.2f})"


def claim_table(claim: Claim) -> str:
    """A claim's checks: what, measured, met."""
    return markdown_table(
        ["check", "measured", "met"], [[c.check, c.measured, met(c.met)] for c in claim.checks]
    )


def knee_table(comparison: Comparison) -> str:
    """Per policy: its knee, the knee's speedups, and its best point at each compute level."""
    rows = []
    for fam in table_order(comparison.families):
        t = fam.knee.timing if fam.knee else None
        rows.append(
            [
                f"**{policy_label(fam)}**" if fam.proposed else policy_label(fam),
                point_cell(fam.knee, fam.knob),
                f"{times_interval(t.batch1_speedup, t.batch1_speedup_low, t.batch1_speedup_high)} / "
                f"{times(t.batched_speedup)}"
                if t
                else "-",
                f"{fam.knee.batch1_efficiency:.2f} / {fam.knee.batched_efficiency:.2f}"
                if t and fam.knee
                else "-",
                *[point_cell(fam.at_levels[lv], fam.knob) for lv in comparison.levels],
            ]
        )
    header = ["policy", "knee", "knee speedup b1 (95% CI) / batched", "efficiency b1 / batched"]
    header += [_level_header(lv) for lv in comparison.levels]
    return markdown_table(header, rows)


def overhead_table(comparison: Comparison) -> str:
    """What one exit decision of each timed policy costs, against the backbone at batch 1."""
    rows = [
        [r.policy, f"{r.us_per_decision:.1f}", pct_value(r.fraction_of_backbone_batch1)]
        for r in comparison.decision_overhead
    ]
    return markdown_table(["policy", "µs per exit decision", "% of the backbone's batch-1 time"], rows)
