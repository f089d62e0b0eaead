"""write_report on a run folder: typed results read back, and files from another version refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bofexits.errors import ConfigError
from bofexits.evaluation.comparison import Comparison, save_comparison
from bofexits.evaluation.sweep import Sweep, save_sweep
from bofexits.reporting import report
from bofexits.reporting.report import read_results, write_report


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in vars(report) if n.startswith("plot_")]:
        monkeypatch.setattr(report, name, lambda *args: None)


def test_report_from_both_results(
    sweep_result: Sweep, comparison_result: Comparison, tmp_path: Path, no_plots: None
) -> None:
    save_sweep(sweep_result, tmp_path)
    save_comparison(comparison_result, tmp_path)
    assert read_results(tmp_path) == (sweep_result, comparison_result)
    text = write_report(tmp_path).read_text()
    assert text.startswith("# bofexits report: fashion-mnist") and "## Policies side by side" in text
    assert "<title>bofexits report: fashion-mnist</title>" in (tmp_path / "report.html").read_text()


def test_comparison_alone_gets_a_title(comparison_result: Comparison, tmp_path: Path, no_plots: None) -> None:
    save_comparison(comparison_result, tmp_path)
    assert (
        write_report(tmp_path).read_text().startswith("# bofexits report: policy comparison\n\n## Policies")
    )


def test_results_of_another_version_are_refused(sweep_result: Sweep, tmp_path: Path) -> None:
    data = sweep_result.to_dict()
    del data["schema_version"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"results.json: .*no schema_version.*re-run `bofexits sweep`"):
        write_report(tmp_path)


def test_package_exports_every_public_name() -> None:
    import bofexits.reporting as reporting

    assert reporting.__all__ == sorted(reporting._HOME)
    assert all(getattr(reporting, name) is not None for name in reporting.__all__)
