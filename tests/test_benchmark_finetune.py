"""benchmarks/finetune_ablation.py: every row starts from the same run and is judged against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bofexits.config import TrainConfig
from bofexits.training.loop import train
from tests.helpers import load_script

ablation = load_script("finetune_ablation")


def test_rows_start_from_the_same_run_and_an_interrupted_ablation_keeps_its_rows(
    fake_data: Path,
    tmp_path: Path,
    tiny_config: Callable[..., TrainConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = train(
        tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=1), tmp_path / "base", progress=False
    )
    out = tmp_path / "abl"
    rows = ["a:finetune_epochs=1", "b:finetune_epochs=1,finetune_distill=0,finetune_weights=2/1/1/1"]
    assert (
        ablation.main([str(base.checkpoint), "--out", str(out), *sum((["--row", r] for r in rows), [])]) == 0
    )
    result = json.loads((out / "finetune.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == ["two-phase", "a", "b"]
    start = result["rows"][0]["test"]
    for row in result["rows"]:  # judged against the starting network, not a lowered one of its own
        assert row["test"]["reference_accuracy"] == start["exit_accuracy"][-1]
        assert len(row["test"]["exit_accuracy"]) == 4
    assert result["rows"][2]["settings"] == {
        "finetune_epochs": 1,
        "finetune_distill": 0.0,
        "finetune_weights": [2.0, 1.0, 1.0, 1.0],
    }
    first = (out / "a" / "checkpoint.pt").stat().st_mtime_ns
    assert (
        ablation.main([str(base.checkpoint), "--out", str(out), "--row", rows[0]]) == 0
    )  # kept, not retrained
    assert (out / "a" / "checkpoint.pt").stat().st_mtime_ns == first
    assert "| a |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a fine-tuning key"):
        ablation.main([str(base.checkpoint), "--out", str(out), "--row", "c:epochs=3"])
