"""Baseline exit heads (SDN pooled-linear, BranchyNet-style conv): shapes, learning, cost, checkpoints, runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bofexits.config import ModelConfig, TrainConfig
from bofexits.errors import ConfigError
from bofexits.evaluation.cost import measure_costs
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.baseline_exits import ConvExits, PooledLinearExits, mixed_pool
from bofexits.models.build import build_model
from bofexits.models.folded import fold_batchnorm
from bofexits.policies import CalibratedThreshold, ExitCalibration
from bofexits.training.checkpoint import load_model, save_checkpoint
from bofexits.training.loop import train

HEADS = {"pooled": PooledLinearExits, "conv": ConvExits}
TINY = {"widths": [4, 8, 8, 16]}


def _tiny(head: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(exit_head=head, **TINY))  # type: ignore[arg-type]


@pytest.mark.parametrize("head", HEADS)
def test_shapes_and_no_state(head: str) -> None:
    net = _tiny(head)
    assert isinstance(net.exits, HEADS[head])
    x = torch.randn(3, 1, 28, 28)
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(3, 10)] * 4
    maps, _ = net.features(x)
    for i, m in enumerate(maps):
        logits, state = net.exits.step(i, m, None)
        assert state is None and torch.equal(logits, outs[i])


def test_heads_size_themselves_on_the_maps() -> None:
    # vgg28 maps are 14x14, 7x7, 3x3: SDN pools to 4x4 unless the map is smaller; convs stride 2 above 4 px.
    assert _tiny("pooled").exits.sizes == [4, 4, 3]
    assert _tiny("conv").exits.strides == [2, 2, 1]
    assert PooledLinearExits([2, 3], 4).sizes == [4, 4]  # no sizes given: always 4x4
    with pytest.raises(ConfigError, match="one \\(H, W\\) per exit"):
        ConvExits([2, 3], 4, map_sizes=[(8, 8)])


def test_mixed_pool_matches_reference_and_alpha_learns() -> None:
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    for a in (0.0, 0.3, 1.0):
        alpha = torch.tensor(a, dtype=torch.float64)
        want = a * F.adaptive_max_pool2d(x, 4) + (1 - a) * F.adaptive_avg_pool2d(x, 4)
        torch.testing.assert_close(mixed_pool(x, alpha, 4), want)
    exits = PooledLinearExits([3], 5, map_sizes=[(7, 7)])
    assert float(exits.alpha(0).detach()) == 0.5
    exits([x.float()])[0].sum().backward()
    assert exits.mix_logits.grad is not None and float(exits.mix_logits.grad.abs().sum()) > 0


def test_unknown_exit_head_lists_choices() -> None:
    with pytest.raises(ConfigError, match="unknown exit head 'nope'; choose one of bof, pooled, conv"):
        build_model(ModelConfig(exit_head="nope"))


@pytest.mark.parametrize("head", HEADS)
def test_each_head_learns_a_separable_problem(head: str) -> None:
    # Class c raises channel c of both maps: any sensible head separates this in a few steps.
    torch.manual_seed(0)
    y = torch.arange(60) % 3
    maps = []
    for c, hw in ((4, 8), (6, 4)):
        m = torch.randn(60, c, hw, hw)
        m[torch.arange(60), y] += 1.5
        maps.append(m)
    exits = HEADS[head]([4, 6], 3, map_sizes=[(8, 8), (4, 4)])
    opt = torch.optim.Adam(exits.parameters(), lr=0.05)
    for _ in range(40):
        loss = sum(F.cross_entropy(lg, y) for lg in exits(maps))
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    exits.eval()
    with torch.no_grad():
        acc = [float((lg.argmax(1) == y).float().mean()) for lg in exits(maps)]
    assert all(a >= 0.95 for a in acc), acc


@pytest.mark.parametrize("backbone, channels", [("vgg28", 1), ("resnet32", 3), ("vgg32", 3)])
@pytest.mark.parametrize("head", HEADS)
def test_exit_heads_cost_at_most_5_percent_of_the_backbone(backbone: str, channels: int, head: str) -> None:
    costs = measure_costs(build_model(ModelConfig(backbone=backbone, in_channels=channels, exit_head=head)))
    assert len(costs.exit_macs) == 3 and min(costs.exit_macs) > 0  # counted, not missing
    assert sum(costs.exit_macs) <= 0.05 * costs.backbone_macs, (costs.exit_macs, costs.backbone_macs)


@pytest.mark.parametrize("head", HEADS)
def test_checkpoint_round_trip_rebuilds_the_head(head: str, tmp_path: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(exit_head=head, **TINY))  # type: ignore[arg-type]
    torch.manual_seed(1)
    net = build_model(cfg.model)
    net.train()(torch.randn(8, 1, 28, 28))  # move the BatchNorm statistics off their defaults
    save_checkpoint(tmp_path / "c.pt", {"config": cfg.to_dict(), "model": net.state_dict()})
    loaded, _, loaded_cfg = load_model(tmp_path / "c.pt")
    assert loaded_cfg.model.exit_head == head and isinstance(loaded.exits, HEADS[head])
    x = torch.randn(4, 1, 28, 28)
    for a, b in zip(net.eval()(x), loaded(x), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("head", HEADS)
def test_fold_batchnorm_keeps_the_logits(head: str) -> None:
    net = _tiny(head)
    net.train()(torch.randn(8, 1, 28, 28))
    net.eval()
    folded = fold_batchnorm(net.exits)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    maps, _ = net.features(torch.randn(4, 1, 28, 28))
    for a, b in zip(net.exits(maps), folded(maps), strict=True):  # type: ignore[operator]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("head", HEADS)
def test_runtime_early_exit_batch1_equals_batched(head: str, optimize: bool) -> None:
    net = _tiny(head).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        cal = ExitCalibration.fit(net(torch.randn(64, 1, 28, 28, generator=gen))[:-1], "max_prob")
    runtime = AdaptiveRuntime(net, CalibratedThreshold(cal, beta=0.5, variant="quantile"), optimize=optimize)
    x = torch.randn(16, 1, 28, 28, generator=gen)
    batched = runtime(x)
    singles = [runtime(x[i : i + 1]) for i in range(16)]
    assert torch.equal(batched.exit_index, torch.cat([s.exit_index for s in singles]))
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in singles]), rtol=1e-4, atol=1e-5)
    assert int((batched.exit_index < 3).sum()) > 0  # samples did leave early


@pytest.mark.parametrize("head", HEADS)
def test_two_phase_training_trains_the_heads(
    head: str, fake_data: Path, tmp_path: Path, tiny_config: Callable[..., TrainConfig]
) -> None:
    cfg = tiny_config(fake_data, mode="two-phase", epochs=1, exit_epochs=2)
    cfg.model.exit_head = head
    result = train(cfg, tmp_path / "run", progress=False)
    backbone, first, second = result.history
    assert [h["phase"] for h in result.history] == ["backbone", "exits", "exits"]
    assert second["loss"] < first["loss"] - 0.05, (first["loss"], second["loss"])  # the heads learn ...
    assert second["val_acc"][-1] == backbone["val_acc"][-1]  # ... on a frozen backbone
    loaded, cals, _ = load_model(result.checkpoint)
    assert isinstance(loaded.exits, HEADS[head]) and cals["max_prob"].means.shape == (3,)
