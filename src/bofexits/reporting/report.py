"""Write `report.md`, a self-contained `report.html` and the plots from a run folder's results.

The folder holds `results.json` (a knob sweep, `Sweep`) and/or `policies.json` (a policy
comparison, `Comparison`); each is read back into its type first, so a file from another
bofexits version is refused with a message instead of rendering half a report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bofexits._io import write_text
from bofexits._outputs import check_members, output_set
from bofexits.errors import BofexitsError, ConfigError
from bofexits.evaluation.comparison import Comparison, write_comparison_files
from bofexits.evaluation.sweep import Sweep, write_sweep_file
from bofexits.reporting.claims import check_claims
from bofexits.reporting.html import render_html
from bofexits.reporting.markdown import render_comparison, render_markdown
from bofexits.reporting.plots import (
    plot_accuracy_at_levels,
    plot_accuracy_vs_compute,
    plot_exit_distribution,
    plot_matched_distributions,
    plot_policies,
)

__all__ = ["knee_beta", "read_results", "write_report", "write_results"]

T = TypeVar("T")


def _read(path: Path, from_dict: Callable[[Any], T]) -> T | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); re-run the evaluation") from exc
    except RecursionError:
        raise ConfigError(
            f"{path} is nested too deeply to be a bofexits result; re-run the evaluation"
        ) from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def read_results(run_dir: str | Path) -> tuple[Sweep | None, Comparison | None]:
    """The sweep (`results.json`) and the policy comparison (`policies.json`) in `run_dir`, when there.

    Raises:
        ConfigError: a file is not valid JSON, or comes from another bofexits version.
        MixedOutputError: the files differ from the set the folder's last run wrote together.
    """
    run_dir = Path(run_dir)
    check_members(run_dir, ("results.json", "policies.json"))
    return _read(run_dir / "results.json", Sweep.from_dict), _read(
        run_dir / "policies.json", Comparison.from_dict
    )


def knee_beta(run_dir: str | Path) -> float | None:
    """The knee's beta of the sweep in `run_dir` (what `make demo` reports), or None.

    None when there is no readable results.json or it has no knee: benchmarks that time "the
    knee" then fall back to a default and say so.
    """
    try:
        results, _ = read_results(run_dir)
    except BofexitsError:
        return None
    knee = results.knee() if results is not None else None
    return None if knee is None or knee.value is None else float(knee.value)


def _sweep_part(result: Sweep, run_dir: Path) -> str:
    plot_accuracy_vs_compute(result, run_dir / "accuracy_vs_compute.png")
    plot_exit_distribution(result, run_dir / "exit_distribution.png")
    return render_markdown(result)


def _comparison_part(comparison: Comparison, run_dir: Path, titled: bool) -> str:
    plot_policies(comparison, run_dir / "policies.png")
    plot_matched_distributions(comparison, run_dir / "matched_distributions.png")
    plot_accuracy_at_levels(comparison, run_dir / "accuracy_at_levels.png")
    title = "" if titled else "# bofexits report: policy comparison\n\n"
    return title + render_comparison(comparison)


def _render(result: Sweep | None, comparison: Comparison | None, into: Path, name: str) -> Path:
    """report.md, report.html and the plots of `result` and/or `comparison`, written into `into`."""
    parts = []
    if result is not None:
        parts.append(_sweep_part(result, into))
    if comparison is not None:
        parts.append(_comparison_part(comparison, into, titled=result is not None))
    text = "\n".join(parts)
    path = into / "report.md"
    write_text(path, text)
    dataset = result.dataset if result is not None and result.dataset else name
    write_text(into / "report.html", render_html(text, into, f"bofexits report: {dataset}"))
    return path


def write_report(run_dir: str | Path) -> Path:
    """Write report.md, a self-contained report.html and the plots from a run folder's results.

    Reads `results.json` (the knob sweep, `bofexits sweep` / `demo`) and `policies.json`
    (the policy comparison, `bofexits compare` / `demo`); at least one must be there. The
    report's files replace the old ones as one set (`bofexits._outputs.output_set`).
    """
    run_dir = Path(run_dir)
    result, comparison = read_results(run_dir)
    if result is None and comparison is None:
        raise ConfigError(
            f"{run_dir} has neither results.json nor policies.json; run `bofexits sweep`, "
            "`bofexits compare` or `bofexits demo` first"
        )
    with output_set(run_dir, "report") as stage:
        _render(result, comparison, stage, run_dir.name)
    return run_dir / "report.md"


def write_results(
    out_dir: str | Path,
    verb: str,
    *,
    sweep: Sweep | None = None,
    comparison: Comparison | None = None,
    report: bool | None = None,
) -> Path:
    """Write a sweep (results.json) and/or a comparison (policies.json, .csv), with the report,
    into `out_dir` as one set: the folder holds the old run or this one, never a mix.

    Args:
        out_dir: the run folder.
        verb: what writes them ("sweep", "compare", "demo"), recorded with each file.
        sweep, comparison: the results to write; the report also shows the one not given when
            the folder has it. A comparison without claims gets them here (`check_claims`).
        report: write the report too; default: with a comparison always (as `bofexits compare`
            does), with a sweep alone when the folder already has a report (which would
            otherwise describe the old results).

    Returns:
        `out_dir`.
    """
    out = Path(out_dir)
    if report is None:
        report = comparison is not None or (out / "report.md").exists()
    # The folder's other result, shown in the report beside the new one; only that file is
    # checked against the record, so a mixed folder is mended by rerunning the verb.
    old_sweep = old_comparison = None
    if report and sweep is None:
        check_members(out, ("results.json",))
        old_sweep = _read(out / "results.json", Sweep.from_dict)
    if report and comparison is None:
        check_members(out, ("policies.json",))
        old_comparison = _read(out / "policies.json", Comparison.from_dict)
    if comparison is not None and not comparison.claims:
        comparison.claims = check_claims(comparison)  # the comparison measures; its claims are read here
    with output_set(out, verb) as stage:
        if sweep is not None:
            write_sweep_file(sweep, stage)
        if comparison is not None:
            write_comparison_files(comparison, stage)
        if report:
            _render(sweep or old_sweep, comparison or old_comparison, stage, out.name)
    return out
