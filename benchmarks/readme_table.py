"""Regenerate the README's results sections from a run's results.json and policies.json (default runs/demo).

    .venv/bin/python benchmarks/readme_table.py [RUN_DIR] [--write]

Prints the markdown blocks; with --write, replaces the blocks between the
`<!-- results:begin/end -->` and `<!-- policies:begin/end -->` markers in README.md, and the
`<!-- deploy:begin/end -->` block with benchmarks/deploy.py's table when --deploy-dir has one.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bofexits.evaluation.sweep import knee_point
from bofexits.reporting.report import check_targets


def render(results: dict) -> str:
    plat, timing, costs = results["platform"], results["timing"], results["costs"]
    train = results.get("training", {})
    per_t = {t["beta"]: t for t in timing["per_beta"]}
    lines = [
        f"Fashion-MNIST test set ({results['num_test']} images), `{train.get('backbone', '?')}` backbone, "
        f"{train.get('epochs', '?')} epochs ({train.get('mode', '?')}), {results['variant']} rule on "
        f"{results['score']}. Machine: {plat['processor']}, torch {plat['torch']}, {timing['threads']} threads; "
        f"batch-1 over {timing['batch1_samples']} test images, batched at {timing['batched_size']}. "
        f"Speedups are against the plain backbone timed interleaved in the same run.",
        "",
        "| beta | accuracy % | MACs % | exit fractions | balance | batch-1 speedup | batched speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        t = per_t[p["beta"]]
        lines.append(
            f"| {p['beta']:g} | {100 * p['accuracy']:.2f} | {100 * p['relative_macs']:.1f} | "
            f"{' / '.join(f'{f:.2f}' for f in p['exit_fractions'])} | {p['balance']:.2f} | "
            f"{t['batch1_speedup']:.2f}x | {t['batched_speedup']:.2f}x |"
        )
    knee = knee_point(results["points"], results["full_accuracy"])
    lines += [
        "",
        f"Full network (final exit): {100 * results['full_accuracy']:.2f}%; exits alone: "
        + ", ".join(f"{100 * a:.2f}%" for a in results["per_exit_accuracy"][:-1])
        + f". Exit heads: {100 * sum(costs['exit_macs']) / costs['backbone_macs']:.2f}% of the backbone's MACs, "
        f"{100 * costs['exit_params'] / costs['backbone_params']:.2f}% of its parameters.",
    ]
    if knee is not None:
        lines.append(
            f"Knee (cheapest beta within 0.5 pp of the full network): beta={knee['beta']:g}, "
            f"{100 * knee['accuracy']:.2f}% at {100 * knee['relative_macs']:.1f}% of the MACs."
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else 'no'} |" for r in check_targets(results)
    ]
    return "\n".join(lines)


_SHOWN = ("proposed", "max-softmax", "entropy", "patience", "budgeted")


def render_policies(comp: dict) -> str:
    """Knee and matched-compute accuracy per policy, then the claims with their verdicts."""
    levels = [f"{lv:g}" for lv in comp["levels"]]
    timing = comp.get("timing", {})

    def cell(p: dict | None) -> str:
        return "n/a" if p is None else f"{100 * p['accuracy']:.2f} @ {100 * p['relative_macs']:.1f}"

    lines = [
        f"Every policy over its knob on the same network and test set ({comp['source']}; "
        f"{timing.get('runtime_check', {}).get('mismatched_exits', '?')} exit mismatches between simulation and "
        f"real runtime over {timing.get('runtime_check', {}).get('points', '?')} timed points). Cells: accuracy % @ "
        f"MACs %; speedups at batch 1 / batch {timing.get('batched_size', '?')} against the plain backbone in "
        f"the same rounds ({timing.get('threads', '?')} threads). Oracle: {100 * comp['oracle']['accuracy']:.2f}% at "
        f"{100 * comp['oracle']['relative_macs']:.1f}%.",
        "",
        "| policy | knee | balance at knee | knee speedup | "
        + " | ".join(f"<= {float(lv):.0%} MACs" for lv in levels)
        + " |",
        "|---|---|---|---|" + "---|" * len(levels),
    ]
    for fam in comp["families"]:
        if fam["name"] not in _SHOWN:
            continue
        knee, t = fam["knee"], (fam["knee"] or {}).get("timing", {})
        speed = f"{t['batch1_speedup']:.2f}x / {t['batched_speedup']:.2f}x" if t else "-"
        lines.append(
            f"| {fam['label']} | {cell(knee)} | {knee['balance']:.2f} | {speed} | "
            if knee
            else f"| {fam['label']} | n/a | - | - | "
        )
        lines[-1] += " | ".join(cell(fam["at_levels"][lv]) for lv in levels) + " |"
    lines.append("")
    for c in comp["claims"]:
        lines.append(
            f"- **({c['claim']}) {c['statement']}: {c['verdict']}.** "
            + "; ".join(
                f"{k['check']}: {k['measured']}"
                + ("" if k["met"] is None else (" (met)" if k["met"] else " (**not met**)"))
                for k in c["checks"]
            )
        )
    return "\n".join(lines)


def _replace(text: str, name: str, block: str) -> str:
    new, n = re.subn(
        rf"<!-- {name}:begin -->.*<!-- {name}:end -->",
        lambda _: f"<!-- {name}:begin -->\n{block}\n<!-- {name}:end -->",
        text,
        flags=re.S,
    )
    if n != 1:
        raise SystemExit(f"README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return new


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
    block = render(json.loads((args.run_dir / "results.json").read_text()))
    policies = render_policies(json.loads((args.run_dir / "policies.json").read_text()))
    print(block + "\n\n" + policies)
    if args.write:
        readme = Path("README.md")
        text = _replace(_replace(readme.read_text(), "results", block), "policies", policies)
        deploy = args.deploy_dir / "deploy_benchmark.md"
        if deploy.exists():  # written by benchmarks/deploy.py from its deploy_benchmark.json
            text = _replace(text, "deploy", deploy.read_text().strip())
        readme.write_text(text)


if __name__ == "__main__":
    main()
