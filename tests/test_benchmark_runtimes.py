"""benchmarks/runtimes.py end to end on a tiny checkpoint and fake Fashion-MNIST: rows, ratios, README block."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import load_script, write_tiny_checkpoint

runtimes = load_script("runtimes")


@pytest.fixture
def checkpoint(tmp_path: Path, write_fake_data: Callable[..., Path]) -> Path:
    data = write_fake_data(tmp_path / "data", n_train=64, n_test=48)
    return write_tiny_checkpoint(tmp_path / "run" / "checkpoint.pt", data)


def test_runtimes_table_end_to_end(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- runtimes:begin -->\nold\n<!-- runtimes:end -->\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    argv = [str(checkpoint), "--out", str(out), "--onnx-exporter", "legacy", "--threads", "1"]
    argv += ["--batch-sizes", "1", "8", "--images", "6", "--batched-images", "16", "--rounds", "2", "--readme"]
    # A toy network's time is per-operation overhead, not MACs: the efficiency bound does not apply.
    argv += ["--device", "cpu", "--max-efficiency", "inf"]
    monkeypatch.setattr(sys, "argv", ["runtimes.py", *argv])
    runtimes.main()
    result = json.loads((out / "runtimes.json").read_text())
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 4  # runtime x batch x (plain, knee, beta 0, beta 1)
    assert {(r["runtime"], r["batch"]) for r in rows} == {
        (rt, b) for rt in ("pytorch eager", "onnxruntime") for b in (1, 8)
    }
    for r in rows:
        assert r["mean_ms"] > 0 and r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        if r["config"] != "plain":
            assert 0 < r["speedup_low"] <= r["speedup_high"]  # the bootstrap interval of the speedup
        if r["config"] == "plain":
            assert r["speedup"] == 1.0 and math.isnan(r["efficiency"])
        else:  # efficiency is the measured speedup over the compute speedup, per definition
            assert r["efficiency"] == pytest.approx(r["speedup"] / r["compute_speedup"])
    assert result["device"] == "cpu" and result["ort_providers"] == ["CPUExecutionProvider"]
    assert result["knee_source"].startswith("default beta")  # no results.json beside the checkpoint
    assert result["achieved"]["beta 0"]["exit_fractions"][0] == 1.0  # beta 0: everyone leaves at exit 1
    assert all(a.get("same_exits_onnxruntime", 1.0) == 1.0 for a in result["achieved"].values())
    text = readme.read_text()
    assert "old" not in text and "| pytorch eager | 1 | knee |" in text
    assert (out / "runtimes.md").read_text().strip() in text
