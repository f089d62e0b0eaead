"""benchmarks/gpu_check.py in its CPU mode (--dry-run) on a tiny untrained network: JSON, table, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import load_script

gpu_check = load_script("gpu_check")


def test_dry_run_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        rc = gpu_check.main(
            ["--dry-run", "--skip-tests", "--out", str(tmp_path), "--images", "4", "--compare", "6"]
        )
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["environment"]["device"] == "cpu"
    (subject,) = result["subjects"]
    assert "error" not in subject, subject
    assert subject["agreement"]["same_exits_batched"] == subject["agreement"]["images"] == 6
    assert subject["agreement"]["unexplained_differences"] == 0
    configs = [(r["batch"], r["config"]) for r in subject["rows"]]
    assert configs == [
        (1, "plain eager"),
        (1, "adaptive eager"),
        (1, "previous eager"),
        (16, "plain"),
        (16, "adaptive"),
        (16, "previous"),
    ]  # no graph rows without CUDA
    assert all(r["mean_ms"] > 0 and r["compute_speedup"] >= 1.0 for r in subject["rows"])
    table = (tmp_path / "gpu_check.md").read_text()
    assert "dry run: no GPU numbers" in table and "| tiny | 16 | adaptive |" in table
    assert "gpu_check.json" in capsys.readouterr().out


def test_without_cuda_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--require-gpu", "--out", str(tmp_path)]) == 1
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "gpu_check.json").exists()


def test_failures_name_what_failed() -> None:
    ok = {"tests": {"returncode": 0}, "subjects": [{"name": "resnet50", "error": "skipped: no torchvision"}]}
    assert gpu_check.failures(ok) == []
    bad = {"tests": {"returncode": 1}, "subjects": [{"name": "demo", "error": "InputError: NaN"}]}
    assert gpu_check.failures(bad) == ["GPU tests exited 1", "demo: InputError: NaN"]
