"""Regenerate the README's results sections from a run's results.json and policies.json (default runs/demo).

    .venv/bin/python benchmarks/readme_table.py [RUN_DIR] [--write]

Prints the markdown blocks; with --write, replaces the blocks between the
`<!-- results:begin/end -->` and `<!-- policies:begin/end -->` markers in README.md, and the
`<!-- deploy:begin/end -->` block with benchmarks/deploy.py's table when --deploy-dir has one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _readme_blocks import replace_block

from bofexits.errors import BofexitsError
from bofexits.evaluation.comparison import Check, Comparison, FamilyResult
from bofexits.evaluation.points import MAX_DROP, Point
from bofexits.evaluation.sweep import Sweep
from bofexits.reporting.format import fractions, met, pct, pct_value, pp, times, times_interval
from bofexits.reporting.report import read_results
from bofexits.reporting.tables import markdown_table
from bofexits.reporting.targets import check_targets

_SHOWN = ("proposed", "max-softmax", "entropy", "patience", "budgeted")


def _setup(results: Sweep) -> str:
    plat, timing, train = results.platform, results.timing, results.training
    timed = (
        f"{timing.threads} threads; batch-1 over {timing.batch1_samples} test images, batched at "
        f"{timing.batched_size}. Speedups are mean time per image against the plain backbone (same optimisations) "
        "timed interleaved in the same run; efficiency = speedup / compute speedup."
        if timing
        else f"{plat.threads} threads; not timed."
    )
    trained = (
        f"`{train.backbone}` backbone, {train.epochs} epochs ({train.mode}"
        f"{': ' + train.phases if train.phases else ''})" if train else "a trained network"
    )
    return (
        f"{results.dataset or 'the'} test set ({results.num_test} images), {trained}, {results.variant} rule on "
        f"{results.score}. Machine: {plat.processor}, torch {plat.torch}, {timed}"
    )


def _b1(p: Point) -> str:
    """A point's batch-1 speedup with its 95% interval (where the run kept one)."""
    t = p.timing
    if t is None:
        return times(float("nan"))
    return times_interval(t.batch1_speedup, t.batch1_speedup_low, t.batch1_speedup_high)


def _knob_rows(results: Sweep) -> list[list[str]]:
    nan = float("nan")
    return [
        [
            f"{p.value:g}",
            pct_value(p.accuracy),
            pct_value(p.relative_macs, 1),
            fractions(p.exit_fractions),
            f"{p.balance:.2f}",
            times(p.compute_speedup),
            f"{p.timing.batch1_mean_ms if p.timing else nan:.3f} ({p.timing.batch1_p95_ms if p.timing else nan:.3f})",
            f"{_b1(p)} ({p.batch1_efficiency:.2f})",
            f"{times(p.timing.batched_speedup if p.timing else nan)} ({p.batched_efficiency:.2f})",
        ]
        for p in results.points
    ]


def render(results: Sweep) -> str:
    """The results block: the knob's table, the exits, the knee and the demo's targets."""
    costs = results.costs
    header = [
        "beta",
        "accuracy %",
        "MACs %",
        "exit fractions",
        "balance",
        "compute speedup",
        "batch-1 mean (p95) ms",
        "batch-1 speedup, 95% CI (efficiency)",
        "batched speedup (efficiency)",
    ]
    lines = [_setup(results), "", markdown_table(header, _knob_rows(results)), ""]
    lines.append(
        f"Full network (final exit): {pct(results.full_accuracy)}; exits alone: "
        + ", ".join(pct(a) for a in results.per_exit_accuracy[:-1])
        + f". Exit heads: {pct(costs.exit_macs_fraction)} of the backbone's MACs, "
        f"{pct(costs.exit_params_fraction)} of its parameters."
    )
    if (knee := results.knee()) is not None:
        lines.append(
            f"Knee (cheapest beta within {pp(MAX_DROP, 1, signed=False)} of the full network): beta={knee.value:g}, "
            f"{pct(knee.accuracy)} at {pct(knee.relative_macs, 1)} of the MACs."
        )
    targets = [[t.target, t.measured, met(t.met, emphasis=False)] for t in check_targets(results)]
    return "\n".join([*lines, "", markdown_table(["target", "measured", "met"], targets)])


def _cell(p: Point | None) -> str:
    return "n/a" if p is None else f"{pct_value(p.accuracy)} @ {pct_value(p.relative_macs, 1)}"


def _policy_row(fam: FamilyResult, levels: tuple[float, ...]) -> list[str]:
    knee = fam.knee
    t = knee.timing if knee else None
    speed = f"{_b1(fam.knee)} / {times(t.batched_speedup)}" if t and fam.knee else "-"
    head = [fam.label, _cell(knee), f"{knee.balance:.2f}", speed] if knee else [fam.label, "n/a", "-", "-"]
    return [*head, *[_cell(fam.at_levels[lv]) for lv in levels]]


def _check(c: Check) -> str:
    mark = "" if c.met is None else (" (met)" if c.met else " (**not met**)")
    return f"{c.check}: {c.measured}{mark}"


def _claim_lines(comp: Comparison) -> list[str]:
    return [
        f"- **({c.claim}) {c.statement}: {c.verdict}.** " + "; ".join(map(_check, c.checks))
        for c in comp.claims
    ]


def render_policies(comp: Comparison) -> str:
    """Knee and matched-compute accuracy per policy, then the claims with their verdicts."""
    timing = comp.timing
    check = timing.runtime_check if timing else None
    checked = (
        f"{check.mismatched_exits} exit mismatches between simulation and real runtime over {check.points} timed "
        f"points). Cells: accuracy % @ MACs %; speedups at batch 1 / batch {timing.batched_size} against the "
        f"plain backbone, every policy in the same rounds ({timing.threads} threads; batch 1 with its 95% "
        "bootstrap interval over rounds and images)."
        if timing and check
        else "no point timed or run for real). Cells: accuracy % @ MACs %."
    )
    intro = (
        f"Every policy over its knob on the same network and test set ({comp.source}; {checked} Oracle: "
        f"{pct(comp.oracle.accuracy)} at {pct(comp.oracle.relative_macs, 1)}."
    )
    header = [
        "policy",
        "knee",
        "balance at knee",
        "knee speedup b1 (95% CI) / batched",
        *[f"<= {lv:.0%} MACs" for lv in comp.levels],
    ]
    rows = [_policy_row(f, comp.levels) for f in comp.families if f.name in _SHOWN]
    return "\n".join([intro, "", markdown_table(header, rows), "", *_claim_lines(comp)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", nargs="?", default="runs/demo", type=Path)
    ap.add_argument("--write", action="store_true", help="update README.md in place")
    ap.add_argument(
        "--deploy-dir",
        type=Path,
        default=Path("runs/deploy"),
        help="where benchmarks/deploy.py wrote its results",
    )
    args = ap.parse_args()
    try:
        results, comparison = read_results(args.run_dir)
    except BofexitsError as exc:
        raise SystemExit(f"readme_table: {exc}") from exc
    if results is None or comparison is None:
        raise SystemExit(f"{args.run_dir} needs results.json and policies.json (`make demo` writes both)")
    block, policies = render(results), render_policies(comparison)
    print(block + "\n\n" + policies)
    if args.write:
        readme = Path("README.md")
        text = replace_block(replace_block(readme.read_text(), "results", block), "policies", policies)
        deploy = args.deploy_dir / "deploy_benchmark.md"
        if deploy.exists():  # written by benchmarks/deploy.py from its deploy_benchmark.json
            text = replace_block(text, "deploy", deploy.read_text().strip())
        readme.write_text(text)


if __name__ == "__main__":
    main()
