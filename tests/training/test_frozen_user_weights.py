"""Exits for a model the user already trained: `--mode frozen --backbone tv:NAME --backbone-weights FILE`.

The frozen network must be the user's own classifier (its final exit gives the user model's
logits, its weights and BN statistics never move); a head of another class count, two
backbone sources or none are refused in one line; `--exit-epochs` counts frozen mode's epochs.
The config tests need no torchvision; the rest take the `tvm` fixture and skip without it.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from bofexits.cli import main
from bofexits.config import ModelConfig, TrainConfig, check_config, resolve_config
from bofexits.errors import ConfigError

CLASSES = ("dark", "light", "mid")
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def tvm() -> ModuleType:
    return pytest.importorskip("torchvision").models  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes of 14 grey 20x24 PNGs (they load as 1 channel unless the network takes 3)."""
    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for cls, level in zip(CLASSES, (40, 200, 120), strict=True):
        (root / cls).mkdir()
        for i in range(14):
            pixels = np.clip(rng.normal(level, 30, (20, 24)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def _user_classifier(tvm: ModuleType, num_classes: int) -> torch.nn.Module:
    """A torchvision resnet18 whose BN statistics are not the defaults, as a trained one's are not."""
    torch.manual_seed(0)
    model = tvm.resnet18(num_classes=num_classes)
    with torch.no_grad():
        model.train()(torch.randn(16, 3, 32, 32) * 2 + 0.5)  # moves every running mean and variance
    return model.eval()


@pytest.fixture(scope="module")
def user_weights(tvm: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("weights") / "my_resnet18.pt"
    model = _user_classifier(tvm, len(CLASSES))
    torch.save(model.state_dict(), path)
    return path, model


def _readme_command(folder: Path, weights: Path, out: Path) -> list[str]:
    """The README's frozen-mode command as written, on this test's folder, weights and output."""
    block = re.search(r"```sh\n(bofexits train [^`]*--mode frozen[^`]*)```", README.read_text())
    assert block is not None, "README.md lost its frozen-mode command"
    argv = shlex.split(block.group(1).replace("\\\n", " "))[1:]
    paths = {"DIGITS": str(folder), "my_resnet18.pt": str(weights), "runs/x": str(out)}
    return ["-q", *(paths.get(a, a) for a in argv)]


def _train_argv(folder: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-q", "train", "--dataset", "image-folder", "--data-dir", str(folder), "--backbone", "tv:resnet18",
        "--backbone-weights", str(weights), "--mode", "frozen", "--exit-epochs", "1", "--image-size", "32",
        "--out", str(out), "--threads", "1", "--batch-size", "8", "--codewords", "8", "--device", "cpu",
        *extra,
    ]  # fmt: skip


# --- the command line, end to end ----------------------------------------------------------------


@pytest.mark.slow
def test_frozen_exits_on_your_own_resnet18(
    grey_folder: Path, user_weights: tuple[Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bofexits.models.build import build_model
    from bofexits.training.checkpoint import load_model
    from bofexits.training.splits import load_run_data

    weights, user = user_weights
    out = tmp_path / "run"
    argv = [*_readme_command(grey_folder, weights, out), "--threads", "1", "--batch-size", "8", "--codewords", "8"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert main([*argv, "--device", "cpu", "--resume"]) == 0  # the same command resolves to the stored config
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["mode"], cfg["epochs"]) == ("frozen", 2)  # --exit-epochs 2: the run's epochs
    # The grey images load with the 3 channels the user's conv1 takes; classes from the folders.
    assert (cfg["model"]["in_channels"], cfg["model"]["num_classes"], cfg["model"]["image_size"]) == (3, 3, 32)

    net, calibrations, run_cfg = load_model(out / "checkpoint.pt")
    assert calibrations
    # Backbone weights and BN statistics are the file's after training (only the exits trained).
    reference = build_model(run_cfg.model)  # loads the weights file again
    trained = net.stages.state_dict()
    for key, value in reference.stages.state_dict().items():
        assert torch.equal(trained[key], value), key
    # The final exit is the user's network: same logits on the same preprocessed images.
    _, test = load_run_data(run_cfg)
    (x, y), *_ = test.batches(len(test), shuffle=False)
    assert x.shape[1] == 3
    with torch.no_grad():
        final, expected = net(x)[-1], user(x)
    torch.testing.assert_close(final, expected, atol=1e-5, rtol=1e-5)

    # `bofexits sweep` (alias evaluate) reports the user model's own accuracy for the final exit.
    assert main(["-q", "sweep", str(out / "checkpoint.pt"), "--timing-samples", "0", "--betas", "0", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["per_exit_accuracy"][-1] == pytest.approx((expected.argmax(1) == y).float().mean().item())


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_head_for_other_classes_is_refused(
    tvm: ModuleType, grey_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "five.pt"
    torch.save(tvm.resnet18(num_classes=5).state_dict(), weights)
    assert main(_train_argv(grey_folder, weights, tmp_path / "run")) == 2
    err = _one_line_error(capsys)
    assert "head (fc) has 5 outputs but the data has 3 classes" in err
    assert "--mode two-phase" in err and "trained on these 3 classes" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_weights_of_another_architecture_are_refused(
    tvm: ModuleType, grey_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "mobilenet.pt"
    torch.save(tvm.mobilenet_v3_small(num_classes=3).state_dict(), weights)
    assert main(_train_argv(grey_folder, weights, tmp_path / "run")) == 2
    assert "does not fit torchvision's resnet18" in _one_line_error(capsys)


def test_both_or_neither_backbone_source_is_refused(
    grey_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)  # never read: the config is refused first
    both = _train_argv(grey_folder, weights, tmp_path / "a", "--backbone-checkpoint", str(weights))
    assert main(both) == 2
    assert "from one place, got two" in _one_line_error(capsys)
    neither = [a for a in _train_argv(grey_folder, weights, tmp_path / "b") if a != str(weights)]
    neither.remove("--backbone-weights")
    assert main(neither) == 2
    err = _one_line_error(capsys)
    assert "--backbone-weights FILE" in err and "--backbone-checkpoint PATH" in err


# --- the config: which backbone, how many epochs -------------------------------------------------


@pytest.mark.parametrize(
    "frozen,match",
    [
        ({"backbone_checkpoint": None}, r"pass your classifier \(--backbone tv:NAME --backbone-weights FILE"),
        ({"backbone_checkpoint": "run/checkpoint.pt", "weights": "w.pt"}, "from one place, got two"),
        ({"backbone_checkpoint": None, "weights": "w.pt", "backbone": "vgg28"}, "not 'vgg28'; pass --backbone tv:"),
    ],
)
def test_frozen_backbone_sources(frozen: dict[str, str | None], match: str) -> None:
    model = ModelConfig(backbone=frozen.get("backbone") or "tv:resnet18", backbone_weights=frozen.get("weights"))
    with pytest.raises(ConfigError, match=match):
        check_config(TrainConfig(mode="frozen", backbone_checkpoint=frozen["backbone_checkpoint"], model=model))


def test_either_source_alone_is_accepted() -> None:
    check_config(TrainConfig(mode="frozen", backbone_checkpoint="run/checkpoint.pt"))
    check_config(TrainConfig(mode="frozen", model=ModelConfig(backbone="tv:resnet18", backbone_weights="w.pt")))


def test_exit_epochs_count_frozen_epochs(tmp_path: Path) -> None:
    frozen = {"mode": "frozen", "backbone_checkpoint": "c.pt"}
    assert resolve_config({**frozen, "exit_epochs": 2}).epochs == 2  # the command
    assert resolve_config({**frozen, "epochs": 3}).epochs == 3  # as before
    assert resolve_config({**frozen, "epochs": 2, "exit_epochs": 2}).epochs == 2
    with pytest.raises(ConfigError, match=r"--epochs \(3\) and --exit-epochs \(2\) both count its epochs"):
        resolve_config({**frozen, "epochs": 3, "exit_epochs": 2})
    assert resolve_config({"mode": "two-phase", "exit_epochs": 2}).epochs == 10  # the backbone's, untouched
    # A stored frozen config.json (both keys) resumes as it was written: `epochs` exit epochs.
    stored = tmp_path / "config.json"
    stored.write_text(json.dumps({**TrainConfig(**frozen, epochs=3, exit_epochs=12).to_dict()}))  # type: ignore[arg-type]
    assert resolve_config(config_file=stored).epochs == 3
    assert resolve_config({"exit_epochs": 5}, config_file=stored).epochs == 5  # a flag over the file
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**frozen, "exit_epochs": 4}))
    assert resolve_config(config_file=partial).epochs == 4


def test_replacing_a_head_outside_frozen_mode_is_logged(
    tvm: ModuleType, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from bofexits.models.backbones import create_backbone

    weights = tmp_path / "imagenet.pt"
    torch.save(tvm.resnet18().state_dict(), weights)  # 1000 classes, fine-tuned to 3 (joint, two-phase)
    with caplog.at_level(logging.INFO, logger="bofexits.models.vision"):
        backbone = create_backbone("tv:resnet18", num_classes=3, image_size=32, weights=weights)
    assert "head fc" in caplog.text and "has 1000 outputs, the network 3" in caplog.text
    assert backbone.stages[-1].fc.inner.out_features == 3  # type: ignore[union-attr]


def test_a_grey_dataset_feeds_your_rgb_model_its_grey_copies(
    tvm: ModuleType, fake_data: Path, tmp_path: Path
) -> None:
    # Fashion-MNIST has 1 channel: the RGB model runs through its one-channel form (kernels summed),
    # which gives what the model gives on the grey images copied to 3 channels.
    from bofexits.training.loop import train
    from bofexits.training.splits import run_splits

    user = _user_classifier(tvm, 10)
    weights = tmp_path / "fmnist_resnet18.pt"
    torch.save(user.state_dict(), weights)
    model = ModelConfig(backbone="tv:resnet18", backbone_weights=str(weights), codewords=8)
    cfg = TrainConfig(
        data_dir=str(fake_data), mode="frozen", epochs=1, batch_size=32, kmeans_images=64, threads=1,
        device="cpu", limit_train=64, model=model,
    )  # fmt: skip
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.model.input_shape == (1, 28, 28)
    _, val, _ = run_splits(cfg)
    (x, _), *_ = val.batches(len(val), shuffle=False)
    with torch.no_grad():
        final, expected = result.model(x)[-1], user(x.expand(-1, 3, -1, -1))
    torch.testing.assert_close(final, expected, atol=1e-4, rtol=1e-4)
