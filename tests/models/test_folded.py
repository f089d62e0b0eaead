"""Inference forms equal the training-time modules: folded BN, frozen BoF exits, optimised runtime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.backbones import create_backbone
from bofexits.models.exits import BoFExits
from bofexits.models.folded import FrozenBoFExits, fold_batchnorm
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold, ExitCalibration


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize("name,shape", [("vgg28", (1, 28, 28)), ("resnet32", (3, 32, 32))])
def test_fold_batchnorm_matches_eval_forward(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    stages = create_backbone(name, widths=(4, 4, 8, 8)).stages
    seq = nn.Sequential(*stages)
    _randomise_bn(seq)
    seq.eval()
    folded = fold_batchnorm(seq)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules() if name == "vgg28")
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), seq(x), atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in seq.modules())  # the original is untouched


@pytest.mark.parametrize(
    "kwargs",
    [
        {"membership": "rbf"},
        {"membership": "rbf", "squared": False},
        {"membership": "logistic"},
        {"membership": "rbf", "spatial_level": 1, "aggregation": "sum"},
        {"membership": "logistic", "spatial_level": 1, "shared_classifier": False, "aggregation": "none"},
        {"membership": "rbf", "reduce_channels": 3, "pools": [2, 1, 1]},
    ],
)
def test_frozen_exits_match_bof_exits(kwargs: dict[str, object]) -> None:
    torch.manual_seed(0)
    exits = BoFExits([4, 6, 8], 5, codewords=6, **kwargs).double().eval()  # type: ignore[arg-type]
    maps = [torch.randn(2, c, s, s, dtype=torch.float64) for c, s in ((4, 8), (6, 4), (8, 3))]
    exits.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    graph = frozen.graph_form()  # the 1x1-convolution form that export traces
    state_a = state_b = state_c = None
    for i, m in enumerate(maps):
        with torch.no_grad():
            a, state_a = exits.step(i, m, state_a)
        b, state_b = frozen.step(i, m, state_b)
        c, state_c = graph.step(i, m, state_c)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, a, atol=1e-5, rtol=1e-5)
    assert not frozen.graph  # graph_form made a copy


def test_optimised_runtime_equals_plain_runtime() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("vgg28", widths=(4, 4, 8, 8))
    net = MultiExitNetwork(
        backbone.stages, lambda ch: BoFExits(ch, 10, codewords=8, pools=[2, 2, 1]), (1, 28, 28)
    )
    _randomise_bn(net)
    net.eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        maps, _ = net.features(x)
        net.exits.init_from_features(maps, generator=torch.Generator().manual_seed(0))
        logits = net(x)
    cal = ExitCalibration.fit(logits[:-1], "max_logit")
    for beta in (0.9, 1.0, 1.1):
        policy = CalibratedThreshold(cal, beta)
        fast = AdaptiveRuntime(net, policy, optimize=True)(x)
        slow = AdaptiveRuntime(net, policy, optimize=False)(x)
        assert torch.equal(fast.exit_index, slow.exit_index)
        torch.testing.assert_close(fast.logits, slow.logits, atol=1e-4, rtol=1e-4)
    plain = AdaptiveRuntime(net, policy).plain_backbone()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), net.forward_backbone(x), atol=1e-4, rtol=1e-4)
