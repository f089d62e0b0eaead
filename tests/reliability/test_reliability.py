"""The reliability catalogue as tests: every case is clear (a one-line error) or ok.

Marker `reliability`, left out of the default run (about 8 minutes on 2 cores on its own: the
default `make test` must stay under 10). `make reliability` runs it and rewrites
docs/reliability.md and .json (`BOFEXITS_RELIABILITY_REPORT`). One test per category, so a
failure names the category and lists each bad case with its first line of output. On a busy
machine: RELIABILITY_JOBS (cases at a time, default 2), RELIABILITY_TIMEOUT (seconds per case
before it counts as a hang, default 90), RELIABILITY_FIXTURES (a folder to build the fixtures
in once and reuse).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability import families
from tests.reliability.catalogue import CLEAR, OK, Result, run_catalogue, write_reports

pytestmark = pytest.mark.reliability

CATEGORIES = (
    "checkpoint",
    "data",
    "image",
    "export",
    "cli-option",
    "python-api",
    "config-report",
    "paths",
    "signals",
    "disk-full",
    "deep-json",
    "resume-state",
    "image-modes",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Result]:
    root = Path(os.environ.get("RELIABILITY_FIXTURES") or tmp_path_factory.mktemp("reliability"))
    found, info = run_catalogue(
        root,
        jobs=int(os.environ.get("RELIABILITY_JOBS", "2")),
        timeout=float(os.environ.get("RELIABILITY_TIMEOUT", "90")),
    )
    if families.DISK_SKIPPED:
        info["disk-full"] = f"left out: no tmpfs could be mounted ({families.DISK_SKIPPED['reason']})"
    report = os.environ.get("BOFEXITS_RELIABILITY_REPORT")
    if report:
        write_reports(Path(report), found, info)
    return found


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_case_is_clear_or_ok(results: list[Result], category: str) -> None:
    if category == "disk-full" and families.DISK_SKIPPED:
        pytest.skip(f"no tmpfs could be mounted here ({families.DISK_SKIPPED['reason']}); run as root")
    mine = [r for r in results if r.category == category]
    assert mine, f"no case in category {category}"
    bad = [f"{r.verdict}: {r.id}: {r.command}: {r.first_line}" for r in mine if r.verdict not in (CLEAR, OK)]
    assert not bad, "\n".join(bad)


def test_every_category_is_tested(results: list[Result]) -> None:
    assert {r.category for r in results} <= set(CATEGORIES)
