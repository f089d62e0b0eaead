"""Reporting: the run folder's report (markdown, self-contained HTML, plots) and the CLI's tables.

`report` writes the files, `markdown` and `html` render them, `tables` builds the tables the
report and the command line share, `targets` holds the demo's targets, `plots` the figures,
`format` how numbers read. Names load on first use (PEP 562), so the CLI's tables do not
import matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time `__getattr__` imports on demand
    from .format import fractions, met, pct, pct_value, pp, times
    from .html import render_html
    from .markdown import render_comparison, render_markdown
    from .plots import (
        plot_accuracy_at_levels,
        plot_accuracy_vs_compute,
        plot_exit_distribution,
        plot_matched_distributions,
        plot_policies,
    )
    from .report import read_results, write_report
    from .tables import format_comparison, format_points, markdown_table
    from .targets import Target, check_targets

_EXPORTS: dict[str, tuple[str, ...]] = {
    "format": ("fractions", "met", "pct", "pct_value", "pp", "times"),
    "html": ("render_html",),
    "markdown": ("render_comparison", "render_markdown"),
    "plots": (
        "plot_accuracy_at_levels",
        "plot_accuracy_vs_compute",
        "plot_exit_distribution",
        "plot_matched_distributions",
        "plot_policies",
    ),
    "report": ("read_results", "write_report", "write_results"),
    "tables": ("format_comparison", "format_points", "markdown_table"),
    "targets": ("Target", "check_targets"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [  # the names of `_EXPORTS` (a test checks); spelled out for linters
    "Target",
    "check_targets",
    "format_comparison",
    "format_points",
    "fractions",
    "markdown_table",
    "met",
    "pct",
    "pct_value",
    "plot_accuracy_at_levels",
    "plot_accuracy_vs_compute",
    "plot_exit_distribution",
    "plot_matched_distributions",
    "plot_policies",
    "pp",
    "read_results",
    "render_comparison",
    "render_html",
    "render_markdown",
    "times",
    "write_report",
    "write_results",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
