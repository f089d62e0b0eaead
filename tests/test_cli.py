"""The command line end to end on small Fashion-MNIST-format files, its one-line errors and its verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bofexits.cli import main
from bofexits.training.checkpoint import load_checkpoint

TINY = ["--widths", "4", "8", "8", "16", "--codewords", "8", "--batch-size", "32", "--threads", "1"]


def test_train_sweep_report(fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["-q", "train", "--data-dir", str(fake_data), "--epochs", "1", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["widths"] == [4, 8, 8, 16] and config["epochs"] == 1
    data = load_checkpoint(run / "checkpoint.pt")["data"]  # what export needs without the dataset files
    assert len(data["classes"]) == 10 and data["classes"][0] == "T-shirt/top" and len(data["mean"]) == 1
    code = main(
        [
            "-q",
            "sweep",
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
        (["sweep", "/nonexistent/checkpoint.pt"], "does not exist"),
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
    (tmp_path / "empty").mkdir()  # a folder that exists but lacks the files (a missing one: see the fuzz test)
    assert main(["-q", "train", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err and "internet" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["-q", "sweep", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_list_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd, name in (("backbones", "vgg28"), ("datasets", "fashion-mnist"), ("policies", "calibrated")):
        assert main([cmd]) == 0
        assert name in capsys.readouterr().out


def test_train_and_sweep_on_an_image_folder(tmp_path: Path) -> None:
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
    assert main(["-q", "sweep", ckpt, "--timing-samples", "0", "--betas", "0", "1"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["num_test"] == 16 and max(results["per_exit_accuracy"]) > 0.9  # the exits learned it


# --- verbs, aliases, config errors, choices ---------------------------------------------------------


def test_evaluate_is_a_deprecated_alias_of_sweep(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from bofexits.cli import commands

    calls: list[argparse.Namespace] = []
    monkeypatch.setattr(commands, "sweep", lambda args: calls.append(args) or 0)  # the knob sweep
    argv = ["ck.pt", "--betas", "0", "1", "--timing-samples", "0"]
    assert main(["-q", "sweep", *argv]) == 0
    assert capsys.readouterr().err == ""
    assert main(["-q", "evaluate", *argv]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`evaluate` is deprecated" in err and "`bofexits sweep`" in err
    same = {k: v for k, v in vars(calls[0]).items() if k not in ("command", "replaced_by")}
    assert same == {k: v for k, v in vars(calls[1]).items() if k not in ("command", "replaced_by")}


def test_compare_is_the_policy_comparison_and_sweep_points_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from bofexits.cli import commands

    calls: list[argparse.Namespace] = []
    monkeypatch.setattr(commands, "compare", lambda args: calls.append(args) or 0)  # every policy
    assert main(["-q", "compare", "ck.pt", "--points", "11", "--timed-points", "2"]) == 0
    assert (calls[0].points, calls[0].timed_points) == (11, 2)
    assert capsys.readouterr().err == ""
    # The comparison's own flags given to the renamed `sweep`: one line naming the new verb.
    for flag in ("--points", "--timed-points"):
        assert main(["-q", "sweep", "ck.pt", flag, "11"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"bofexits compare CKPT {flag}" in err
    assert len(calls) == 1


@pytest.mark.parametrize(
    "content,message",
    [
        ({"epochs": "ten"}, "config key 'epochs' expects int, got 'ten' (str)"),
        ({"model": {"codewords": 8.5}}, "config key 'model.codewords' expects int, got 8.5 (float)"),
        ({"model": {"widths": "4 8"}}, "config key 'model.widths' expects list[int] | None, got '4 8'"),
        ({"mode": "sideways"}, "config key 'mode' expects one of 'joint', 'frozen', 'two-phase'"),
        ({"model": 3}, "config key 'model' expects an object of ModelConfig fields, got 3 (int)"),
        ({"augment": "yes"}, "config key 'augment' expects bool, got 'yes' (str)"),
    ],
)
def test_wrong_types_in_a_config_file_are_one_line(
    content: dict[str, object], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(content))
    assert main(["-q", "train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bofexits: error: {path}: ") and message in err
    assert not (tmp_path / "r").exists()


def test_choices_come_from_the_registries(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bofexits.cli import build_parser
    from bofexits.config import MODES
    from bofexits.models.build import EXIT_HEADS
    from bofexits.policies import SCORES
    from bofexits.policies.calibrated import VARIANTS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"--score": SCORES, "--variant": VARIANTS, "--exit-head": EXIT_HEADS, "--mode": MODES}
    for verb in ("train", "sweep", "compare", "export"):
        for action in sub.choices[verb]._actions:
            for flag in set(action.option_strings) & set(expected):
                assert action.choices is not None and list(action.choices) == list(expected[flag]), (
                    verb,
                    flag,
                )
    assert main(["sweep", "ck.pt", "--variant", "median"]) == 2
    assert "invalid choice: 'median'" in capsys.readouterr().err


def test_parsing_predict_imports_no_torch() -> None:
    # An export folder is served without torch: the parser reads the torch-side registries lazily.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; from bofexits.cli import build_parser; "
        "args = build_parser().parse_args(['predict', 'export_dir', 'a.png']); print(args.command)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "predict", out.stderr


def test_every_train_flag_reaches_the_config() -> None:
    # Flags are passed on by name (`config_from_args`): one named after no config key would be lost.
    import argparse

    from bofexits.cli import build_parser
    from bofexits.config import config_keys

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices["train"]._actions}
    assert dests - set(config_keys()) == {"help", "out", "resume", "config", "dist_timeout"}


@pytest.mark.slow  # the whole demo on tiny data: about 5 s
def test_demo_trains_sweeps_compares_and_reports(
    fake_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from bofexits import demo
    from bofexits.config import ModelConfig

    tiny = dataclasses.replace(
        demo.DEMO_CONFIG,
        data_dir=str(fake_data),
        exit_epochs=1,
        finetune_epochs=1,
        batch_size=32,
        kmeans_images=64,
        threads=1,
        device="cpu",
        model=ModelConfig(widths=[4, 8, 8, 16], codewords=8),
    )
    monkeypatch.setattr(demo, "DEMO_CONFIG", tiny)
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--epochs", "1", "--timing-samples", "4"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "fashion-mnist" and results["training"]["epochs"] == 3  # 1 + 1 + 1 fine-tuning
    assert (out / "policies.json").exists() and (out / "report.html").exists()
    assert "## Targets" in capsys.readouterr().out  # the report, printed


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--epochs", "abc"], "argument --epochs: expected an integer, got 'abc'"),
        (["train", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["sweep", "ck.pt", "--threads", "0"], r"argument --threads: must be an integer in \[1, 1024\], got 0"),
        (["sweep", "ck.pt", "--timing-rounds", "0"], "argument --timing-rounds: must be an integer"),
        (["compare", "ck.pt", "--points", "1"], r"argument --points: must be an integer in \[2, 100000\], got 1"),
        (["tune", "ck.pt", "--budget", "5"], r"argument --budget: must be a finite number in \(0, 2\], got 5"),
        (["tune", "ck.pt", "--max-drop", "inf"], "argument --max-drop: must be a finite number"),
    ],
)
def test_bad_option_values_are_one_line_errors(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("bofexits: error:") and re.search(match, err), err


def test_too_few_kmeans_images_in_a_config_file_is_refused_before_training(
    fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kmeans_images": 1, "epochs": 1, "exit_epochs": 1}))
    argv = ["-q", "train", "--config", str(path), "--data-dir", str(fake_data), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bofexits: error: {path}: config key 'kmeans_images'"), err
    assert not (tmp_path / "r").exists()
