"""Reference backbones, their registry, and `build_model` on top of them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bofexits.config import ModelConfig
from bofexits.errors import ConfigError
from bofexits.models import backbones
from bofexits.models.backbones import Backbone, BasicBlock, create_backbone, list_backbones, register_backbone
from bofexits.models.build import build_model
from bofexits.models.exits import BoFExits


def _shapes(bb: Backbone, batch: int = 2) -> list[tuple[int, ...]]:
    x = torch.randn(batch, *bb.input_shape)
    out = []
    for s in bb.stages:
        s.eval()
        x = s(x)
        out.append(tuple(x.shape))
    return out


def test_registry_lists_reference_backbones() -> None:
    names = list_backbones()
    assert {"vgg28", "resnet32"} <= set(names)
    assert names == sorted(names)


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of resnet32, tv:convnext_tiny, .*, vgg28"):
        create_backbone("alexnet")


def test_an_option_the_backbone_does_not_take_is_named() -> None:
    assert "image_size" not in backbones.backbone_options("vgg28")
    assert "image_size" in backbones.backbone_options("tv:resnet18")  # listed without torchvision
    with pytest.raises(ConfigError, match="backbone 'vgg28' takes no option 'image_size'; it takes num_classes"):
        create_backbone("vgg28", image_size=32)


def test_vgg28_stage_shapes() -> None:
    bb = create_backbone("vgg28", widths=(4, 4, 8, 8), num_classes=7)
    assert bb.input_shape == (1, 28, 28)
    assert bb.exit_pools == [2, 1, 1]  # exit 1 pools its 14x14 map; stages end after their max-pool
    assert _shapes(bb) == [(2, 4, 14, 14), (2, 4, 7, 7), (2, 8, 3, 3), (2, 7)]


def test_vgg28_in_channels() -> None:
    bb = create_backbone("vgg28", widths=(4, 4, 8, 8), in_channels=3)
    assert bb.input_shape == (3, 28, 28)
    assert _shapes(bb)[-1] == (2, 10)


def test_resnet32_stage_shapes() -> None:
    bb = create_backbone("resnet32", widths=(4, 4, 8, 8), blocks=1, num_classes=5)
    assert bb.input_shape == (3, 32, 32)
    assert bb.exit_pools == [2, 1, 1]
    assert _shapes(bb) == [(2, 4, 32, 32), (2, 4, 16, 16), (2, 8, 8, 8), (2, 5)]


def test_resnet32_blocks_per_stage() -> None:
    bb = create_backbone("resnet32", widths=(4, 4, 8, 8), blocks=3)
    n_blocks = [sum(isinstance(m, BasicBlock) for m in s.children()) for s in bb.stages]
    assert n_blocks == [3, 3, 3, 3]


@pytest.mark.parametrize("name", ["vgg28", "resnet32"])
@pytest.mark.parametrize("widths", [(4, 4, 8), (4, 4, 8, 8, 8)])
def test_wrong_number_of_widths(name: str, widths: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="4 widths"):
        create_backbone(name, widths=widths)


def test_basic_block_shortcut() -> None:
    same = BasicBlock(4, 4)
    assert isinstance(same.shortcut, nn.Identity)
    down = BasicBlock(4, 8, stride=2)
    assert isinstance(down.shortcut, nn.Sequential)
    down.eval()
    assert down(torch.randn(2, 4, 6, 6)).shape == (2, 8, 3, 3)
    # identity block: output = relu(body(x) + x)
    same.eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(same(x), torch.relu(same.body(x) + x))


def test_register_backbone_adds_a_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))

    @register_backbone("toy")
    def toy(num_classes: int = 3) -> Backbone:
        head = nn.Sequential(nn.Flatten(), nn.Linear(2, num_classes))
        return Backbone([nn.Conv2d(1, 2, 1), head], (1, 1, 1))

    assert "toy" in list_backbones()
    assert create_backbone("toy", num_classes=4).stages[1][1].out_features == 4  # type: ignore[index]


def test_build_model_from_config() -> None:
    cfg = ModelConfig(
        backbone="vgg28",
        widths=[4, 4, 8, 8],
        codewords=3,
        num_classes=6,
        spatial_level=1,
        aggregation="sum",
        shared_classifier=False,
    )
    net = build_model(cfg)
    assert isinstance(net.exits, BoFExits)
    assert net.num_exits == 4 and net.num_classes == 6
    assert [b.pool for b in net.exits.bof] == [2, 1, 1]  # the backbone's defaults
    assert [b.in_channels for b in net.exits.bof] == [4, 4, 8]
    assert net.exits.aggregation == "sum" and len(net.exits.classifiers) == 3
    assert net.exits.bof[0].out_features == 12
    net.eval()
    out = net(torch.randn(2, 1, 28, 28))
    assert [o.shape for o in out] == [(2, 6)] * 4


def test_build_model_exit_pools_override_and_check() -> None:
    net = build_model(ModelConfig(widths=[4, 4, 8, 8], codewords=3, exit_pools=[4, 2, 1]))
    assert [b.pool for b in net.exits.bof] == [4, 2, 1]
    with pytest.raises(ConfigError, match="exit_pools needs 3 entries"):
        build_model(ModelConfig(widths=[4, 4, 8, 8], codewords=3, exit_pools=[1, 1]))


def test_build_model_rejects_bad_membership() -> None:
    with pytest.raises(ConfigError):
        build_model(ModelConfig(widths=[4, 4, 8, 8], membership="gauss"))


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(ConfigError, match="'vgg28' is already registered"):
        backbones.register_backbone("vgg28")(lambda **kw: None)  # type: ignore[arg-type,return-value]


def test_torchvision_style_registry_names() -> None:
    from bofexits import models

    assert models.list_models("vgg*") == ["vgg28", "vgg32"]
    assert len(models.get_model("vgg28", num_classes=10).stages) == 4
