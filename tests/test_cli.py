"""The command line end to end on small Fashion-MNIST-format files, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bofexits.cli import main
from bofexits.training.checkpoint import load_checkpoint

TINY = ["--widths", "4", "8", "8", "16", "--codewords", "8", "--batch-size", "32", "--threads", "1"]


def test_train_evaluate_report(fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["-q", "train", "--data-dir", str(fake_data), "--epochs", "1", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["widths"] == [4, 8, 8, 16] and config["epochs"] == 1
    data = load_checkpoint(run / "checkpoint.pt")["data"]  # what export needs without the dataset files
    assert len(data["classes"]) == 10 and data["classes"][0] == "T-shirt/top" and len(data["mean"]) == 1
    code = main(
        [
            "-q",
            "evaluate",
            str(run / "checkpoint.pt"),
            "--data-dir",
            str(fake_data),
            "--timing-samples",
            "4",
            "--timing-rounds",
            "1",
            "--betas",
            "0.0",
            "0.5",
            "1.0",
        ]
    )
    assert code == 0
    results = json.loads((run / "results.json").read_text())
    assert [p["beta"] for p in results["points"]] == [0.0, 0.5, 1.0]
    assert results["points"][0]["exit_fractions"][0] == 1.0  # beta=0: everything leaves at exit 1
    assert results["timing"]["batch1_paths_agree"] is True
    assert abs(sum(results["points"][0]["exit_fractions"]) - 1) < 1e-9
    out = capsys.readouterr().out
    assert "beta" in out and "MACs %" in out
    ckpt = str(run / "checkpoint.pt")
    assert main(["-q", "tune", ckpt, "--data-dir", str(fake_data), "--budget", "1.5"]) == 0
    tuned = load_checkpoint(ckpt)["tuned"]
    assert tuned["target"] == "budget=1.5" and tuned["val_relative_macs"] <= 1.5
    assert main(["-q", "tune", ckpt, "--data-dir", str(fake_data), "--latency-ms", "1000"]) == 0
    assert main(["-q", "tune", ckpt, "--data-dir", str(fake_data), "--budget", "0.01"]) == 2
    assert "cheapest is beta=" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["tuned"]["target"] == "latency_ms=1000.0"  # the failed target wrote nothing
    assert main(["-q", "report", str(run)]) == 0
    assert "## Targets" in (run / "report.md").read_text()
    assert (run / "accuracy_vs_compute.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["train", "--exit-pools", "2"], "exit_pools needs 3 entries"),
        (["train", "--config", "/nonexistent.json"], "cannot read config"),
        (["evaluate", "/nonexistent/checkpoint.pt"], "does not exist"),
        (["report", "/nonexistent"], "neither results.json nor policies.json"),
    ],
)
def test_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, fake_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv[0] == "train":
        argv = [*argv, "--data-dir", str(fake_data), "--out", str(tmp_path / "r")]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and err.startswith("bofexits: error:")


def test_missing_data_names_every_way_to_get_it(
    fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "train", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err and "internet" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["-q", "evaluate", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_list_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, name in (("backbones", "vgg28"), ("datasets", "fashion-mnist"), ("policies", "calibrated")):
        assert main([cmd]) == 0
        assert name in capsys.readouterr().out


def test_train_and_evaluate_on_an_image_folder(tmp_path: Path) -> None:
    # Your own images: classes from the sub-folders, images resized to the backbone's input.
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 200)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(rng.normal(level, 30, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "--dataset",
        "image-folder",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--out",
        str(run),
    ]
    assert main([*argv, "--epochs", "1", "--exit-epochs", "1", "--val-fraction", "0.2", *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["num_classes"] == 2 and config["model"]["in_channels"] == 1
    ckpt = str(run / "checkpoint.pt")
    assert main(["-q", "evaluate", ckpt, "--timing-samples", "0", "--betas", "0", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["num_test"] == 16 and max(results["per_exit_accuracy"]) > 0.9  # the exits learned it
