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
@pytest.mark.parametrize("fold", [True, False])
def test_frozen_exits_match_bof_exits(
    kwargs: dict[str, object], fold: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fold=False forces the pooled form large maps x many classes take (`fold_pays`)
    monkeypatch.setattr("bofexits.models.folded.FOLD_SLACK_MACS", 10**9 if fold else -(10**9))
    torch.manual_seed(0)
    exits = BoFExits([4, 6, 8], 5, codewords=6, **kwargs).double().eval()  # type: ignore[arg-type]
    maps = [torch.randn(2, c, s, s, dtype=torch.float64) for c, s in ((4, 8), (6, 4), (8, 3))]
    exits.init_from_features(maps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # per-codeword widths that differ: the general form (the fused one: test_fused_heads)
        for p in exits.bof:
            p.log_sigma.add_(torch.randn(p.log_sigma.shape, dtype=torch.float64) * 0.3)  # type: ignore[operator]
    frozen = FrozenBoFExits(exits, [tuple(m.shape[1:]) for m in maps])
    assert "rbf_fused" not in [b.kind for b in frozen._bof]
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
    assert frozen._folded == [fold and frozen.shared] * 3


def test_fold_is_refused_where_it_would_grow_with_map_size_times_classes() -> None:
    exits = BoFExits([8], 1000, codewords=32).eval()
    frozen = FrozenBoFExits(exits, [(8, 56, 56)])  # ResNet-50's first exit at 224x224
    assert frozen._folded == [False]
    assert frozen._matrix[0].numel() == 1000 * 32  # not 1000 x 32 x 3136


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
    runtime = AdaptiveRuntime(net, policy)
    assert runtime.batch_stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = net.forward_backbone(x)
        torch.testing.assert_close(runtime.plain_backbone()(x), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(runtime.plain(x), want, atol=1e-4, rtol=1e-4)  # channels-last
        torch.testing.assert_close(runtime.plain(x[:1]), want[:1], atol=1e-4, rtol=1e-4)
