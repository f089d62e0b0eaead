"""benchmarks/run_all.py end to end on fake Fashion-MNIST: heads on one backbone, reuse, outputs, README block."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bofexits.training.checkpoint import load_checkpoint, update_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module
    spec.loader.exec_module(module)
    return module


run_all = _load()

TINY = [
    "--quiet",
    "--threads", "1",
    "--epochs", "1",
    "--exit-epochs", "1",
    "--widths", "4", "8", "8", "16",
    "--codewords", "8",
    "--batch-size", "32",
    "--kmeans-images", "64",
    "--points", "11",
    "--timed-points", "2",
    "--timing-rounds", "1",
    "--throughput-batches", "1",
    "--max-efficiency", "inf",  # a toy network's time is per-operation overhead, not MACs
]  # fmt: skip
README = "# title\n\nintro\n\n<!-- crossdataset:begin -->\nold table\n<!-- crossdataset:end -->\n\ntail\n"


def test_run_all_heads_outputs_reuse_and_readme(
    fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    shutil.copytree(fake_data, data / "fashion-mnist")  # one sub-folder per dataset; mnist is absent
    out, readme = tmp_path / "bench", tmp_path / "README.md"
    readme.write_text(README)
    common = [*TINY, "--data-dir", str(data), "--out", str(out)]
    first = ["--datasets", "fashion-mnist", "mnist", "--timing-samples", "4", "--write-readme", str(readme)]
    assert run_all.main([*common, *first]) == 0
    printed = capsys.readouterr().out
    assert "skipped mnist: MNIST files not found" in printed

    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert [(r["dataset"], r["head"]) for r in rows] == [
        ("fashion-mnist", h) for h in ("bof", "pooled", "conv")
    ]
    assert res["quick"] is False and res["skipped"][0]["dataset"] == "mnist"
    assert res["schedule"]["fashion-mnist"]["backbone_epochs (two-phase, bof run)"] == 1
    assert res["platform"]["threads"] == 1 and res["platform"]["cpu_model"]
    assert res["comparison"]["timing_samples"] == 4
    # One backbone for all heads: the final exit (the backbone's own head) is the same network.
    assert len({r["final_accuracy"] for r in rows}) == 1
    assert [r["mode"].split()[0] for r in rows] == ["two-phase", "frozen", "frozen"]
    assert [r["config"]["model"]["exit_head"] for r in rows] == ["bof", "pooled", "conv"]
    for r in rows:
        assert len(r["exit_accuracies"]) == 3 and set(r["claims"]) == {"a", "b", "c"}
        assert r["exit_heads_within_5pct_macs"] == (r["exit_heads_macs_pct"] <= 5.0)
        assert set(r["at_levels"]) == {"0.25", "0.4", "0.5", "0.75"}
        assert r["wall"]["reused"] is False and r["wall"]["train_s"] > 0
        assert r["runtime_check"]["mismatched_exits"] == 0
        if r["knee"] is not None:
            assert "batch1_speedup" in r["knee"]
        for name in ("policies.json", "policies.csv", "report.md"):
            assert (out / r["run_dir"] / name).is_file()
    frozen = load_checkpoint(out / "fashion-mnist" / "pooled" / "checkpoint.pt")["config"]
    assert frozen["mode"] == "frozen" and frozen["backbone_checkpoint"].endswith("bof/checkpoint.pt")

    md = (out / "results.md").read_text()
    assert "| bof | " in md and "| conv | " in md and "![fashion-mnist](fashion-mnist_heads.png)" in md
    assert "## Datasets not run: how to get them" in md and "- **mnist**: MNIST files not found" in md
    assert (out / "fashion-mnist_heads.png").stat().st_size > 0
    text = readme.read_text()
    assert text.startswith(
        "# title\n\nintro\n\n<!-- crossdataset:begin -->\nProduced by `python benchmarks/run_all.py"
    )
    assert text.endswith("<!-- crossdataset:end -->\n\ntail\n") and "old table" not in text
    assert (
        run_all.render_table(run_all.BenchmarkResults.from_dict(res)) in text
        and "Not run (files not on that machine): mnist" in text
    )

    # --render-only redoes the outputs from results.json alone.
    (out / "results.md").unlink()
    assert run_all.main(["--render-only", "--out", str(out), "--quiet"]) == 0
    assert (out / "results.md").read_text() == md

    # Finished runs are reused: nothing trains again.
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(run_all, "train", no_training)
    write_results = run_all.write_results  # the report is checked above; leaving it out saves a second here
    monkeypatch.setattr(run_all, "write_results", lambda *a, **k: write_results(*a, **{**k, "report": False}))
    assert (
        run_all.main([*common, "--datasets", "fashion-mnist", "--heads", "conv", "--timing-samples", "0"])
        == 0
    )
    again = json.loads((out / "results.json").read_text())["rows"]
    assert (
        [r["head"] for r in again] == ["conv"] and again[0]["wall"]["reused"] and again[0]["knee"] is not None
    )
    assert (
        again[0]["final_accuracy"] == rows[2]["final_accuracy"] and "batch1_speedup" not in again[0]["knee"]
    )

    # Another schedule in the same --out is refused, not silently mixed.
    with pytest.raises(SystemExit, match="another configuration .*epochs: 1 vs 2"):
        run_all.main([*common, "--datasets", "fashion-mnist", "--heads", "bof", "--epochs", "2"])
    # A head trained on a backbone that has changed since is refused too.
    conv = out / "fashion-mnist" / "conv" / "checkpoint.pt"
    state = load_checkpoint(conv)["model"]
    key = next(k for k in state if k.startswith("stages.") and state[k].is_floating_point())
    update_checkpoint(conv, model={**state, key: state[key] + 1.0})
    with pytest.raises(SystemExit, match="another backbone"):
        run_all.main([*common, "--datasets", "fashion-mnist", "--heads", "conv", "--timing-samples", "0"])


def test_readme_without_markers_fails_before_any_training(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers here\n")
    with pytest.raises(SystemExit, match="crossdataset:begin.*add them"):
        run_all.main(["--quiet", "--out", str(tmp_path / "bench"), "--write-readme", str(readme)])
    assert not (tmp_path / "bench").exists() and readme.read_text() == "# no markers here\n"


def test_a_gpu_that_is_not_there_fails_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"run_all: device 'cuda' asked for, but torch \S+ sees no CUDA GPU"):
        run_all.main(["--quiet", "--out", str(tmp_path / "bench"), "--device", "cuda"])
    with pytest.raises(SystemExit):  # a misspelt device: argparse's usage error
        run_all.main(["--quiet", "--out", str(tmp_path / "bench"), "--device", "gpu"])
    assert "unknown device 'gpu'" in capsys.readouterr().err and not (tmp_path / "bench").exists()


def test_replace_block_keeps_everything_outside_the_markers() -> None:
    new = run_all.replace_block(README, "| a |\n")
    assert new == README.replace("old table", "| a |")
    assert run_all.replace_block(new, "x") == README.replace("old table", "x")  # idempotent on its own output
    with pytest.raises(SystemExit):
        run_all.replace_block(README + run_all.BEGIN, "x")  # two begin markers: ambiguous


def test_data_root_uses_subfolders_and_the_dir_itself_only_for_one_dataset(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    assert run_all._data_root(tmp_path, "cifar10", several=True) == tmp_path / "cifar10"
    assert run_all._data_root(tmp_path, "mnist", several=True) is None  # would read Fashion-MNIST's files
    assert run_all._data_root(tmp_path, "mnist", several=False) == tmp_path
    assert run_all._data_root(None, "mnist", several=False) is None
