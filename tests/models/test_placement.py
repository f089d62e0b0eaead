"""Exit positions at backbone units: the units, regrouped stages, configs without exit_points, and the
running-mean histogram over the kept exits when exits are dropped."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bofexits.config import ModelConfig, TrainConfig, from_dict
from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.build import build_model, configured_backbone
from bofexits.models.exits import BoFExits
from bofexits.models.placement import candidate_points, fine_units, regroup, unit_shapes
from bofexits.policies.fixed import SingleExit
from bofexits.training.candidates import candidate_network
from bofexits.training.place import placed_network

TINY = ModelConfig(widths=[4, 8, 8, 16], codewords=4)


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_vgg28_units_chain_to_the_backbone_and_offer_every_map() -> None:
    bb = configured_backbone(TINY)
    units = fine_units(bb.stages)
    kinds = [type(u).__name__ for u in units]
    assert kinds == ["Sequential", "Sequential", "MaxPool2d"] * 3 + [
        "Sequential",
        "AdaptiveAvgPool2d",
        "Flatten",
        "Linear",
    ]
    assert [type(m) for m in units[0]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    for s in bb.stages:
        s.eval()
    shapes = unit_shapes(units, bb.input_shape)
    assert all(not m.training for s in bb.stages for m in s.modules())  # the layers' own modes kept
    assert candidate_points(shapes) == list(range(10))  # not the 1x1 pool, the flatten or the classifier
    x = _x()
    y = x
    for u in units:
        y = u.eval()(y)
    for s in bb.stages:
        x = s.eval()(x)
    assert torch.equal(x, y)


def test_resnet32_units_are_its_blocks() -> None:
    bb = configured_backbone(ModelConfig(backbone="resnet32", in_channels=3))
    units = fine_units(bb.stages)
    assert sum(type(u).__name__ == "BasicBlock" for u in units) == 8
    assert len(candidate_points(unit_shapes(units, bb.input_shape))) == 9


@pytest.mark.parametrize("points", [[], [3, 2], [-1], [12], [11, 12]])
def test_bad_exit_points_are_refused_in_one_line(points: list[int]) -> None:
    with pytest.raises(ConfigError, match="exit_points .* must be strictly increasing") as err:
        build_model(dataclasses.replace(TINY, exit_points=points))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError):
        regroup([nn.Identity()] * 3, points or [2])


def test_configs_without_exit_points_build_the_default_stages() -> None:
    """A config written before `exit_points` existed (nor `shared_width`) loads and builds as before."""
    old = TrainConfig(model=TINY).to_dict()
    del old["model"]["exit_points"], old["model"]["shared_width"]
    cfg = from_dict(old)
    assert cfg.model.exit_points is None
    net = build_model(cfg.model)
    assert len(net.stages) == 4 and net.exits.num_exits == 3
    assert "stages.0.0.weight" in net.state_dict()  # the default stage layout, keys unchanged


def test_default_points_as_exit_points_compute_the_default_network() -> None:
    torch.manual_seed(0)
    default = build_model(TINY).eval()
    placed, _ = placed_network(*candidate_network(default, TINY, [2, 5, 8]), [0, 1, 2])
    placed.exits.load_state_dict(default.exits.state_dict())
    x = _x()
    with torch.no_grad():
        for a, b in zip(default(x), placed(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_dropped_exit_leaves_the_running_mean_over_the_kept_exits() -> None:
    """Exit k of a network with exits dropped classifies the mean of the KEPT histograms 1..k."""
    torch.manual_seed(0)
    source = build_model(TINY).eval()
    cand, cand_cfg = candidate_network(source, TINY, [0, 2, 5, 8])
    cand.eval()
    net, cfg = placed_network(cand, cand_cfg, [1, 3])
    assert cfg.exit_points == [2, 8] and cfg.exit_pools == [2, 1]
    x = _x()
    exits: BoFExits = cand.exits  # type: ignore[assignment]
    with torch.no_grad():
        maps, final = cand.features(x)
        h1, h3 = exits.histogram(1, maps[1]), exits.histogram(3, maps[3])
        want = [exits.classify(0, h1), exits.classify(0, (h1 + h3) / 2), final]
        got = net(x)  # the training form
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        for k in range(3):  # the runtime (BatchNorm folded, exits frozen) leaving at each exit
            rt = AdaptiveRuntime(net, SingleExit(k))
            torch.testing.assert_close(rt(x).logits, want[k], rtol=0, atol=1e-4)


def test_torchvision_backbones_are_placed_at_their_blocks() -> None:
    pytest.importorskip("torchvision")
    from bofexits.training.candidates import copy_backbone

    cfg = ModelConfig(backbone="tv:resnet18", image_size=32, in_channels=3, num_classes=10, codewords=4)
    torch.manual_seed(0)
    default = build_model(cfg).eval()
    units = fine_units(default.stages)
    assert [type(u).__name__ for u in units].count("BasicBlock") == 8
    assert candidate_points(unit_shapes(units, default.input_shape)) == list(range(8))  # not layer4's 1x1
    placed = build_model(dataclasses.replace(cfg, exit_points=[1, 3, 7])).eval()
    copy_backbone(default, placed)
    assert placed.exits.num_exits == 3 and [s[1] for s in placed.feature_shapes] == [8, 8, 2]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(placed.forward_backbone(x), default.forward_backbone(x), rtol=0, atol=1e-5)
    again = build_model(dataclasses.replace(cfg, exit_points=[1, 3, 7]))
    again.load_state_dict(placed.state_dict())  # the config rebuilds the same keys
