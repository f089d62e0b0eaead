"""`bofexits place`: the subset search's logits are the placed network's, and the placed run is a
normal run (loads, recalibrated, exports to ONNX and runs there like the runtime)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bofexits.cli import main
from bofexits.config import ModelConfig
from bofexits.data.registry import load_dataset
from bofexits.deploy import runner as deploy
from bofexits.deploy.onnx import export_onnx
from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.build import build_model
from bofexits.models.exits import BoFExits
from bofexits.policies.calibrated import CalibratedThreshold
from bofexits.training.candidates import candidate_network
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.place import place, placed_network
from bofexits.training.subsets import CachedOutputs, score_subset, subset_costs, subset_logits
from tests.helpers import write_tiny_checkpoint

FAST = {"epochs": 1, "retrain_epochs": 1, "threads": 1, "timing_images": 4, "timing_rounds": 1, "grid": 12}


def test_subset_logits_are_the_placed_networks() -> None:
    """What the search scores for a subset is what the network built with that subset computes."""
    cfg = ModelConfig(widths=[4, 8, 8, 16], codewords=4, shared_classifier=False)
    torch.manual_seed(0)
    cand, cand_cfg = candidate_network(build_model(cfg).eval(), cfg, [0, 1, 2, 5, 8])
    cand.eval()
    exits: BoFExits = cand.exits  # type: ignore[assignment]
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    for keep in ([4], [0, 2], [1, 3, 4]):
        net, _ = placed_network(cand, cand_cfg, keep)
        with torch.no_grad():
            maps, _ = cand.features(x)
            hists = [exits.histogram(i, m) for i, m in enumerate(maps)]
            want = subset_logits(hists, keep, exits.classify, exits.aggregation)
            got = net(x)[:-1]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_a_subset_is_scored_by_the_knee_of_its_cost() -> None:
    """A perfect first exit: the knee leaves everyone there, at the cost of its stage and head."""
    labels = torch.arange(40) % 4
    right = torch.nn.functional.one_hot(labels, 4).float() * 10
    cache = CachedOutputs([right, torch.zeros(40, 4)], right, labels)
    kw = {"aggregation": "none", "unit_macs": [10, 30, 60], "points": [0, 1], "head_macs": [5, 1]}
    s = score_subset([0], cache, cache, lambda i, h: h, head_ms=[0.1, 0.1], backbone_ms=1.0, grid=10, **kw)
    assert s.knee is not None and s.knee.exit_fractions == [1.0, 0.0]
    assert s.knee_macs == pytest.approx(15 / 100) and s.objective == pytest.approx(0.15)
    assert s.head_ms == pytest.approx(0.1)
    timed = score_subset(
        [0], cache, cache, lambda i, h: h, head_ms=[0.2, 0.1], backbone_ms=1.0, grid=10, cost="time", **kw
    )
    assert timed.objective == pytest.approx((10 + 0.2 * 100) / 100)  # the head at 20% of the backbone's time
    assert timed.knee_macs == pytest.approx(0.15)
    assert subset_costs([10, 30, 60], [0, 1], [5, 1], [0, 1]).macs_at_exit() == [15, 46, 106]


@pytest.mark.slow  # a whole placement on tiny data and an ONNX export: about 2 s
def test_placed_run_loads_recalibrated_and_exports_like_the_runtime(fake_data: Path, tmp_path: Path) -> None:
    ckpt = write_tiny_checkpoint(
        tmp_path / "src" / "checkpoint.pt", fake_data, kmeans_images=64, batch_size=64
    )
    out = tmp_path / "placed"
    result = place(ckpt, out, points=[0, 2, 5], **FAST)  # type: ignore[arg-type]
    assert result.subsets_scored == 7 and result.kept == result.chosen.keep
    assert result.exit_points == [[0, 2, 5][i] for i in result.kept]
    model, cals, cfg = load_model(out / "checkpoint.pt")
    assert cfg.model.exit_points == result.exit_points and model.exits.num_exits == len(result.kept)
    assert cfg.exit_weights is None and cfg.score in cals
    assert len(cals[cfg.score].means) == len(result.kept)
    raw = load_checkpoint(out / "checkpoint.pt")
    assert raw["complete"] and raw["placement"]["exit_points"] == result.exit_points
    on_disk = json.loads((out / "placement.json").read_text())
    assert on_disk["kept"] == result.kept and len(on_disk["candidates"]) == 3
    assert json.loads((out / "config.json").read_text())["model"]["exit_points"] == result.exit_points

    source, _, _ = load_model(ckpt)
    x = next(load_dataset("fashion-mnist", fake_data)[1].batches(24, shuffle=False))[0]
    with torch.no_grad():  # the frozen backbone is the source's, BatchNorm statistics included
        torch.testing.assert_close(model.forward_backbone(x), source.forward_backbone(x), rtol=0, atol=0)

    export = export_onnx(out / "checkpoint.pt", tmp_path / "export", exporter="legacy")
    beta = json.loads((export / "manifest.json").read_text())["policy"]["beta"]
    _, test = load_dataset("fashion-mnist", fake_data)
    x = next(test.batches(24, shuffle=False))[0]
    want = AdaptiveRuntime(model, CalibratedThreshold(cals[cfg.score], beta, cfg.variant))(x)
    got = deploy.OnnxAdaptiveRunner(export, threads=1)(x.numpy())
    np.testing.assert_array_equal(got.exit_index, want.exit_index.numpy())
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=1e-4, rtol=0)

    with pytest.raises(ConfigError, match="already holds a run"):
        place(ckpt, out, points=[0], **FAST)  # type: ignore[arg-type]


@pytest.mark.slow  # a placement through the CLI: about 1 s
def test_cli_place_writes_a_run_and_refuses_bad_input(
    fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = write_tiny_checkpoint(
        tmp_path / "src" / "checkpoint.pt", fake_data, kmeans_images=64, batch_size=64
    )
    args = ["place", str(ckpt), "--epochs", "1", "--retrain-epochs", "0"]  # --out: the folder + "-placed"
    assert main([*args, "--points", "2", "5", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "kept exits after units" in printed and (tmp_path / "src-placed" / "checkpoint.pt").is_file()
    assert main([*args, "--points", "2"]) != 0  # the folder holds a run now
    assert "already holds a run" in capsys.readouterr().err
    assert main(["place", str(tmp_path / "none.pt"), "--out", str(tmp_path / "q")]) != 0
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    bad = ["place", str(ckpt), "--out", str(tmp_path / "r"), "--points", "12", "--epochs", "1"]
    assert main(bad) != 0
    err = capsys.readouterr().err
    assert "exit_points" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
