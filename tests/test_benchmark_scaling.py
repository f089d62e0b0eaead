"""benchmarks/scaling.py end to end: a tiny demo checkpoint, and torchvision rows where torchvision loads."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import load_script, write_tiny_checkpoint

scaling = load_script("scaling")
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.fixture
def demo_dir(tmp_path: Path, write_fake_data: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path with runs/demo/checkpoint.pt: a small untrained vgg28 calibrated on fake data."""
    data = write_fake_data(tmp_path / "data", n_train=64, n_test=40)
    write_tiny_checkpoint(tmp_path / "runs" / "demo" / "checkpoint.pt", data)
    shutil.copy(Path(__file__).resolve().parents[1] / "README.md", tmp_path / "README.md")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_scaling_rows_plot_and_readme(demo_dir: Path) -> None:
    argv = ["--models", "demo", "tv:resnet18", "--device", "cpu", "--threads", "1", "--image-size", "32"]
    argv += ["--images", "4", "--calibrate", "8", "--rounds", "1", "--head-reps", "1", "--out", "out", "--readme"]
    result = scaling.main(argv)
    saved = json.loads((demo_dir / "out" / "scaling.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    names = {r["backbone"].split(" ")[0] for r in result["rows"]}
    assert "demo" in names and {r["batch"] for r in result["rows"]} == {1, 32}
    if HAS_TORCHVISION:
        assert "tv:resnet18" in names
    else:  # without the extra the row is skipped, and the table says why
        assert "tv:resnet18" not in names and "bofexits[vision]" in result["skipped"]["tv:resnet18"]
    for r in result["rows"]:
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["compute_speedup"])
        assert len(r["exit_head_share_of_stage_time_batch1"]) == 3 and r["exits_share_of_macs"] > 0
    assert (demo_dir / "out" / "scaling.png").stat().st_size > 0
    readme = (demo_dir / "README.md").read_text()
    assert (demo_dir / "out" / "scaling.md").read_text().strip() in readme
