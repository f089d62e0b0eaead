"""torchvision backbones: cut stages equal the model, exits and the runtime work on them, the exits
stay cheap, weights come only from files, and `bofexits train --backbone tv:resnet18` runs.

Tests that need torchvision take the `tvm` fixture and are skipped without it; the rest (the names
are listed, the errors without torchvision or for a download) run everywhere.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from bofexits.cli import main
from bofexits.config import ModelConfig
from bofexits.errors import CheckpointError, ConfigError
from bofexits.models import attach
from bofexits.models.backbones import TORCHVISION_BACKBONES, create_backbone, list_backbones
from bofexits.models.vision import check_weights_file, default_points

SMALL = (3, 64, 64)  # the smallest square all five take at their default points (ConvNeXt needs >= 32)
ARCHS = list(TORCHVISION_BACKBONES)


@pytest.fixture(scope="module")
def tvm() -> ModuleType:
    return pytest.importorskip("torchvision").models  # type: ignore[no-any-return]


def _classifier(tvm: ModuleType, arch: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return tvm.get_model(arch, weights=None, **kwargs).eval()  # type: ignore[no-any-return]


# --- without torchvision ------------------------------------------------------------------------


def test_tv_names_are_registered() -> None:
    assert {f"tv:{a}" for a in ARCHS} <= set(list_backbones("tv:*"))
    assert {
        "tv:resnet18",
        "tv:resnet50",
        "tv:mobilenet_v3_large",
        "tv:efficientnet_b0",
        "tv:convnext_tiny",
    } <= set(list_backbones())


def test_without_torchvision_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now raises ImportError
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ConfigError, match=r"not installed: pip install 'bofexits\[vision\]'") as info:
        create_backbone("tv:resnet18", num_classes=10)
    assert "\n" not in str(info.value)


def test_cli_without_torchvision_stops_before_reading_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    argv = ["train", "--backbone", "tv:resnet18", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bofexits[vision]'" in err and "--backbone" in err


@pytest.mark.parametrize("name", ["DEFAULT", "IMAGENET1K_V2", "ResNet18_Weights.DEFAULT"])
def test_hub_weights_are_refused_with_how_to_pass_a_file(name: str) -> None:
    with pytest.raises(ConfigError, match=r"never downloads weights .*--backbone-weights resnet18.pt"):
        check_weights_file(name)


def test_cli_refuses_a_hub_weights_name_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--backbone-weights", "DEFAULT"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never downloads weights" in err and "--backbone-weights" in err


def test_missing_weights_file_and_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weights file .*nope.pt does not exist"):
        check_weights_file(str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        check_weights_file(tmp_path)


def test_a_forward_that_is_not_a_chain_is_refused() -> None:
    class Skip(nn.Module):  # a residual across children: cutting after `body` would drop the skip
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 3, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(x + self.body(x)).flatten(1))

    with pytest.raises(ConfigError, match="not a plain chain"):
        attach(Skip(), points=["body"], input_shape=(3, 8, 8))


def test_unknown_points_and_models_without_defaults_list_the_layers() -> None:
    toy = nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 4, 3), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(4, 2)
        )
    )
    with pytest.raises(ConfigError, match="no default split points for Sequential.*stem, pool, flat"):
        default_points(toy)
    with pytest.raises(ConfigError, match=r"split points \['layer9'\] must name layers"):
        attach(toy, points=["layer9"], input_shape=(3, 8, 8))
    with pytest.raises(ConfigError, match="before the last one"):
        attach(toy, points=["fc"], input_shape=(3, 8, 8))


# --- with torchvision: every registered model at a small size -------------------------------------


@pytest.fixture(scope="module")
def small_nets(tvm: ModuleType) -> dict[str, tuple[nn.Module, object]]:
    """arch -> (torchvision model, multi-exit network over it) at 3x64x64, 10 classes, float64."""
    nets = {}
    for arch in [*ARCHS, "mobilenet_v3_small"]:  # small: a default in the table, not registered
        model = _classifier(tvm, arch, num_classes=10)
        nets[arch] = (model, attach(model, input_shape=SMALL).double().eval())  # converts `model` too
    return nets


@pytest.mark.parametrize("arch", [*ARCHS, "mobilenet_v3_small"])
def test_stages_chain_to_the_models_forward_and_exits_give_logits(
    small_nets: dict[str, tuple[nn.Module, object]], arch: str
) -> None:
    model, net = small_nets[arch]
    x = torch.randn(3, *SMALL, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net.forward_backbone(x), model(x), atol=1e-4, rtol=1e-4)  # type: ignore[attr-defined]
        outputs = net(x)  # type: ignore[operator]
    assert [tuple(o.shape) for o in outputs] == [(3, 10)] * 4
    assert all(bool(torch.isfinite(o).all()) for o in outputs)


@pytest.mark.parametrize("arch", ARCHS)
def test_runtime_batch1_and_batched_take_the_simulated_exits(
    small_nets: dict[str, tuple[nn.Module, object]], arch: str
) -> None:
    from bofexits.inference.offline import simulate
    from bofexits.inference.runtime import AdaptiveRuntime
    from bofexits.policies import CalibratedThreshold, ExitCalibration

    _, net = small_nets[arch]
    gen = torch.Generator().manual_seed(2)
    calibration_images = torch.randn(16, *SMALL, dtype=torch.float64, generator=gen)
    x = torch.randn(6, *SMALL, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        calibration = ExitCalibration.fit(net(calibration_images)[:-1], "max_prob")  # type: ignore[operator]
        every_exit = net(x)  # type: ignore[operator]
    policy = CalibratedThreshold(calibration, 0.5, "quantile")
    runtime = AdaptiveRuntime(net, policy)  # type: ignore[arg-type]
    want = simulate(policy, every_exit)
    batched = runtime(x)
    singles = [runtime(x[i : i + 1]) for i in range(len(x))]
    assert torch.equal(batched.exit_index, want.exit_index)
    assert torch.equal(torch.cat([s.exit_index for s in singles]), want.exit_index)
    torch.testing.assert_close(batched.logits, want.logits, atol=1e-8, rtol=1e-6)
    assert len(set(want.exit_index.tolist())) > 1  # the policy really routes, not all to one exit


@pytest.mark.parametrize("arch", ARCHS)
def test_exits_cost_at_most_3_percent_of_the_backbone_at_224(tvm: ModuleType, arch: str) -> None:
    from bofexits.evaluation.cost import measure_costs
    from bofexits.models.build import build_model

    net = build_model(ModelConfig(backbone=f"tv:{arch}", in_channels=3, num_classes=1000))
    assert net.input_shape == (3, 224, 224)
    pools = [bof.pool for bof in net.exits.bof]  # type: ignore[union-attr]
    assert [p > 1 for p in pools] == [s[1] > 28 for s in net.feature_shapes]  # 56x56 maps pool
    costs = measure_costs(net)  # counts one 224x224 image: well under a second each
    assert costs.exit_macs_fraction <= 0.03, costs.exit_macs_fraction


# --- weights files --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_large"])  # head `fc` / `classifier.3`
def test_weights_file_round_trip(tvm: ModuleType, tmp_path: Path, arch: str) -> None:
    model = _classifier(tvm, arch, num_classes=10)
    path = tmp_path / f"{arch}.pt"
    torch.save(model.state_dict(), path)
    backbone = create_backbone(f"tv:{arch}", num_classes=10, image_size=64, weights=str(path))
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(3))
    y = x
    with torch.no_grad():
        for stage in backbone.stages:
            y = stage.eval()(y)
        torch.testing.assert_close(y, model(x), atol=1e-5, rtol=1e-5)


def test_imagenet_weights_for_grey_images_keep_the_backbone(tvm: ModuleType, tmp_path: Path) -> None:
    # A 1000-class RGB file for a 10-class grey network: head replaced, first conv summed over RGB.
    model = _classifier(tvm, "resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    backbone = create_backbone("tv:resnet18", num_classes=10, in_channels=1, image_size=32, weights=path)
    first = backbone.stages[0].conv1  # type: ignore[union-attr]
    torch.testing.assert_close(first.weight, model.conv1.weight.sum(1, keepdim=True))
    grey = torch.rand(2, 1, 32, 32)
    rgb_stage = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1)
    with torch.no_grad():  # a grey image gives what the original gave on it copied to RGB
        want = rgb_stage(grey.expand(-1, 3, -1, -1))
        torch.testing.assert_close(backbone.stages[0].eval()(grey), want, atol=1e-5, rtol=1e-5)
    assert backbone.stages[-1].fc.inner.out_features == 10  # type: ignore[union-attr]


def test_bad_weights_files_are_refused_clearly(tvm: ModuleType, tmp_path: Path) -> None:
    resnet = tmp_path / "resnet18.pt"
    torch.save(_classifier(tvm, "resnet18").state_dict(), resnet)
    with pytest.raises(CheckpointError, match=r"does not fit torchvision's mobilenet_v3_large \(missing \["):
        create_backbone("tv:mobilenet_v3_large", image_size=64, weights=resnet)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a weights file\xff" * 4)
    with pytest.raises(CheckpointError, match="not a safe weights file"):
        create_backbone("tv:resnet18", image_size=64, weights=garbage)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        create_backbone("tv:resnet18", image_size=64, weights=tensor)
    with pytest.raises(ConfigError, match="never downloads weights"):
        create_backbone("tv:resnet18", weights="DEFAULT")


# --- the command line -----------------------------------------------------------------------------


def test_train_tv_resnet18_end_to_end_on_grey_28px(
    tvm: ModuleType, fake_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bofexits.training.checkpoint import load_model

    weights = tmp_path / "resnet18.pt"  # ImageNet-shaped (1000 classes, RGB), as a user would bring
    torch.save(_classifier(tvm, "resnet18").state_dict(), weights)
    out = tmp_path / "run"
    argv = ["-q", "train", "--backbone", "tv:resnet18", "--backbone-weights", str(weights)]
    argv += ["--data-dir", str(fake_data), "--out", str(out), "--mode", "joint", "--epochs", "1"]
    argv += ["--limit-train", "64", "--batch-size", "32", "--threads", "1", "--device", "cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    model_cfg = json.loads((out / "config.json").read_text())["model"]
    assert (model_cfg["in_channels"], model_cfg["image_size"]) == (1, 28)  # the dataset decided
    weights.unlink()  # the checkpoint holds every weight: the file is not needed to load the run
    net, calibrations, _ = load_model(out / "checkpoint.pt")
    assert net.input_shape == (1, 28, 28) and calibrations
