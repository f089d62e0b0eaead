"""`--device` on every verb that runs a network: cpu and auto end to end on small Fashion-MNIST-format
files, a GPU that is not there refused before any work, a misspelt device refused by the parser."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from bofexits.cli import main
from bofexits.config import ModelConfig, TrainConfig
from bofexits.data.registry import load_dataset
from bofexits.devices import describe_device, resolve_device
from bofexits.models.build import build_model
from bofexits.training.checkpoint import load_checkpoint, save_checkpoint
from bofexits.training.loop import calibrate

TINY = ["--widths", "4", "8", "8", "16", "--codewords", "8", "--batch-size", "32", "--threads", "1"]
TIMING = ["--timing-samples", "2", "--timing-rounds", "1"]
AUTO = describe_device(resolve_device("auto"))  # what `auto` is here: "cpu" on a machine without a GPU


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, write_fake_data: Callable[..., Path]) -> dict[str, Any]:
    """A calibrated, untrained small vgg28 checkpoint (the verbs do not care about accuracy), and a PNG."""
    root = tmp_path_factory.mktemp("devices")
    data = write_fake_data(root / "data", n_train=120, n_test=40)
    cfg = TrainConfig(
        data_dir=str(data), val_fraction=0.25, model=ModelConfig(widths=[4, 8, 8, 16], codewords=8)
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    train, test = load_dataset("fashion-mnist", data)
    cal = calibrate(model, train.subset(torch.arange(64)))
    ckpt = root / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    state = {"config": cfg.to_dict(), "model": model.state_dict()}
    save_checkpoint(ckpt, {**state, "calibration": {k: c.to_dict() for k, c in cal.items()}})
    png = root / "image.png"
    Image.fromarray(test.images[0, 0].numpy(), mode="L").save(png)
    return {"root": root, "data": str(data), "ckpt": str(ckpt), "png": str(png)}


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_train_runs_on_the_device(
    device: str, fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    argv = [
        "-q",
        "train",
        "--data-dir",
        str(fake_data),
        "--out",
        str(out),
        "--epochs",
        "0",
        "--exit-epochs",
        "1",
    ]
    assert main([*argv, "--limit-train", "64", "--device", device, *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["device"] == device
    assert "checkpoint:" in capsys.readouterr().out


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_sweep_and_its_alias_run_and_record_the_device(
    device: str, run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [run["ckpt"], "--data-dir", run["data"], "--betas", "0", "1", "--device", device]
    assert main(["-q", "sweep", *argv, *TIMING, "--out", str(tmp_path / "s")]) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["timing"]["device"] == (AUTO if device == "auto" else "cpu")
    assert main(["-q", "evaluate", *argv, "--timing-samples", "0", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "results.json").exists()
    assert "`evaluate` is deprecated" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_compare_runs_and_records_the_device(device: str, run: dict[str, Any], tmp_path: Path) -> None:
    argv = ["-q", "compare", run["ckpt"], "--data-dir", run["data"], "--out", str(tmp_path / "c")]
    assert main([*argv, "--points", "5", "--timed-points", "2", *TIMING, "--device", device]) == 0
    policies = json.loads((tmp_path / "c" / "policies.json").read_text())
    assert policies["timing"]["device"] == (AUTO if device == "auto" else "cpu")
    assert (tmp_path / "c" / "report.md").exists()


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_tune_measures_latency_on_the_device(
    device: str, run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(Path(run["ckpt"]).read_bytes())  # tune rewrites it
    argv = ["-q", "tune", str(ckpt), "--data-dir", run["data"], "--latency-ms", "1000", "--device", device]
    assert main(argv) == 0
    where = AUTO if device == "auto" else "cpu"
    assert load_checkpoint(ckpt)["tuned"]["device"] == where
    assert f"ms on {where}; stored in" in capsys.readouterr().out


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_predict_with_a_checkpoint_runs_on_the_device(
    device: str, run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["-q", "predict", run["ckpt"], run["png"], "--data-dir", run["data"], "--json", "--device", device]
    assert main(argv) == 0
    about = json.loads(capsys.readouterr().out)
    assert about["backend"] == "pytorch" and about["device"] == (AUTO if device == "auto" else "cpu")
    assert about["predictions"][0]["error"] is None


# --- refused before any work ------------------------------------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("verb", ["train", "sweep", "evaluate", "compare"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_fails_before_the_output_folder_is_made(
    verb: str,
    device: str,
    no_gpu: None,
    run: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "new" / "out"
    source = (
        [] if verb == "train" else [str(tmp_path / "missing.pt")]
    )  # not read: the device is checked first
    argv = ["-q", verb, *source, "--data-dir", run["data"], "--out", str(out), "--device", device]
    assert main(argv) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("bofexits: error:")]
    assert len(errors) == 1 and f"device '{device}' asked for, but torch" in errors[0]
    assert "use --device cpu or auto" in errors[0] and not (tmp_path / "new").exists()


def test_cuda_without_a_gpu_leaves_tune_and_predict_untouched(
    no_gpu: None, run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(Path(run["ckpt"]).read_bytes())
    before = ckpt.read_bytes()
    assert (
        main(["-q", "tune", str(ckpt), "--budget", "1", "--data-dir", run["data"], "--device", "cuda"]) == 2
    )
    assert ckpt.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert main(["-q", "predict", str(ckpt), run["png"], "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("sees no CUDA GPU; use --device cpu or auto" in line for line in err)


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["sweep", "ck.pt"],
        ["evaluate", "ck.pt"],
        ["compare", "ck.pt"],
        ["tune", "ck.pt", "--budget", "0.5"],
        ["predict", "export_dir", "a.png"],
    ],
)
@pytest.mark.parametrize("bad", ["bogus", "gpu", "cuda:x", ""])
def test_a_misspelt_device_is_a_parse_error(
    argv: list[str], bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", *argv, f"--device={bad}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bofexits: error: argument --device: ")
    assert f"unknown device {bad!r}; use auto, cpu, cuda or cuda:N" in err
