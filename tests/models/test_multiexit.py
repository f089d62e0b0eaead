"""MultiExitNetwork construction (stage list, Sequential, named layers), forward and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bofexits.errors import ConfigError, InputError
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import MultiExitNetwork, check_input, split_named_layers, split_sequential


def _exits(ch: list[int]) -> BoFExits:
    return BoFExits(ch, 3, codewords=4)


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),  # 0, 1
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),  # 2, 3
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),  # 4, 5, 6
    )


class ChainNet(nn.Module):
    """Named children chained by forward, with torch.flatten between the pooling and the Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class SkipNet(ChainNet):
    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.conv1(x))
        x = self.act2(self.conv2(h)) + h  # skip connection across children
        return self.fc(torch.flatten(self.pool(x), 1))


class ExtraOpNet(ChainNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x)))) * 2.0  # an op that is not a child
        return self.fc(torch.flatten(self.pool(x), 1))


def test_from_sequential_splits_and_chains() -> None:
    seq = _sequential()
    net = MultiExitNetwork.from_sequential(seq, [1, 3], _exits, (1, 8, 8))
    assert net.num_exits == 3
    assert [len(s) for s in net.stages] == [2, 2, 3]  # type: ignore[arg-type]
    assert net.feature_shapes == [(4, 8, 8), (6, 4, 4)]
    assert net.num_classes == 3
    assert net.exits.num_exits == 2
    x = torch.randn(5, 1, 8, 8)
    out = net(x)
    assert len(out) == 3 and all(o.shape == (5, 3) for o in out)
    torch.testing.assert_close(out[-1], seq(x))
    torch.testing.assert_close(net.forward_backbone(x), seq(x))


def test_forward_returns_exit_logits_then_backbone_output() -> None:
    net = MultiExitNetwork.from_sequential(_sequential(), [1, 3], _exits, (1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    maps, final = net.features(x)
    assert [m.shape[1:] for m in maps] == [(4, 8, 8), (6, 4, 4)]
    out = net(x)
    for got, want in zip(out, [*net.exits(maps), final], strict=True):
        torch.testing.assert_close(got, want)


def test_from_stage_list(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(kmeans_init=False, dtype=torch.float32)
    assert net.num_exits == 4
    assert net.input_shape == (2, 8, 8)
    assert net.feature_shapes == [(4, 8, 8), (6, 4, 4), (8, 4, 4)]
    assert [b.in_channels for b in net.exits.bof] == [4, 6, 8]
    x = torch.randn(3, 2, 8, 8)
    chain = x
    for s in net.stages:
        chain = s(chain)
    torch.testing.assert_close(net.forward_backbone(x), chain)
    assert len(net(x)) == 4


def test_split_sequential_bounds() -> None:
    seq = nn.Sequential(*[nn.Identity() for _ in range(5)])
    assert [len(s) for s in split_sequential(seq, [0, 3])] == [1, 3, 1]  # type: ignore[arg-type]
    assert [len(s) for s in split_sequential(seq, [3])] == [4, 1]  # type: ignore[arg-type]


@pytest.mark.parametrize("points", [[], [2, 1], [1, 1], [-1], [4], [0, 5]])
def test_split_sequential_rejects_bad_points(points: list[int]) -> None:
    seq = nn.Sequential(*[nn.Identity() for _ in range(5)])
    with pytest.raises(ConfigError, match="split points"):
        split_sequential(seq, points)


def test_from_named_layers_chain_with_linear_after_pooling() -> None:
    torch.manual_seed(0)
    model = ChainNet()
    net = MultiExitNetwork.from_named_layers(model, ["act1", "act2"], _exits, (1, 8, 8))
    assert net.num_exits == 3
    assert net.feature_shapes == [(4, 8, 8), (6, 4, 4)]
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(net.forward_backbone(x), model(x))
    out = net(x)
    assert len(out) == 3
    torch.testing.assert_close(out[-1], model(x))
    # weights are shared with the user's model, not copied
    assert net.stages[0][0] is model.conv1  # type: ignore[index]


def test_from_named_layers_order_of_names_does_not_matter() -> None:
    model = ChainNet()
    a = split_named_layers(model, ["act2", "act1"])
    assert len(a) == 3


@pytest.mark.parametrize("cls", [SkipNet, ExtraOpNet])
def test_from_named_layers_refuses_non_chain_forward(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="not a plain chain"):
        MultiExitNetwork.from_named_layers(cls(), ["act1", "act2"], _exits, (1, 8, 8))


def test_from_named_layers_restores_training_mode() -> None:
    model = ChainNet().train()
    MultiExitNetwork.from_named_layers(model, ["act1"], _exits, (1, 8, 8))
    assert model.training
    model.eval()
    MultiExitNetwork.from_named_layers(model, ["act1"], _exits, (1, 8, 8))
    assert not model.training


def test_from_named_layers_unknown_name_lists_children() -> None:
    with pytest.raises(ConfigError, match="conv1, act1, conv2"):
        MultiExitNetwork.from_named_layers(ChainNet(), ["act9"], _exits, (1, 8, 8))


def test_needs_two_stages() -> None:
    with pytest.raises(ConfigError, match="at least 2 stages"):
        MultiExitNetwork([nn.Sequential(nn.Flatten(), nn.Linear(64, 3))], _exits, (1, 8, 8))


def test_last_stage_must_return_logits() -> None:
    stages = [nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)]
    with pytest.raises(ConfigError, match="last stage must return logits"):
        MultiExitNetwork(stages, _exits, (1, 8, 8))


def test_early_stage_must_return_a_map() -> None:
    stages = [nn.Flatten(), nn.Linear(64, 3)]
    with pytest.raises(ConfigError, match=r"stage 1 must return a \(B, C, H, W\)"):
        MultiExitNetwork(stages, _exits, (1, 8, 8))


def test_stages_that_reject_the_input_shape() -> None:
    stages = [nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Flatten(), nn.Linear(256, 3))]
    with pytest.raises(ConfigError, match="do not accept input"):
        MultiExitNetwork(stages, _exits, (1, 8, 8))


def test_exit_factory_must_cover_every_early_exit() -> None:
    with pytest.raises(ConfigError, match="exit heads cover 1 exits, the network has 2"):
        MultiExitNetwork.from_sequential(_sequential(), [1, 3], lambda ch: BoFExits(ch[:1], 3), (1, 8, 8))


def test_construction_preserves_training_mode() -> None:
    net = MultiExitNetwork.from_sequential(_sequential(), [1, 3], _exits, (1, 8, 8))
    assert net.training
    net.eval()
    net._feature_shapes()
    assert not net.training


@pytest.mark.parametrize(
    "x, pattern",
    [
        (torch.zeros(2, 1, 8, 9), r"\(B, 1, 8, 8\)"),  # wrong width
        (torch.zeros(2, 3, 8, 8), r"\(B, 1, 8, 8\)"),  # wrong channel count
        (torch.zeros(1, 8, 8), r"\(B, 1, 8, 8\)"),  # no batch dimension
        (torch.zeros(2, 1, 1, 8, 8), r"\(B, 1, 8, 8\)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "float"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.int64), "float"),
        (torch.tensor(0.0).expand(2, 1, 8, 8).clone().index_fill_(0, torch.tensor([1]), float("nan")), "NaN"),
        (torch.zeros(2, 1, 8, 8).index_fill_(3, torch.tensor([7]), float("inf")), "inf"),
        (torch.zeros(2, 1, 8, 8).index_fill_(3, torch.tensor([0]), float("-inf")), "inf"),
    ],
)
def test_check_input_rejects(x: torch.Tensor, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        check_input(x, (1, 8, 8))


def test_check_input_shape_message_states_got_and_expected() -> None:
    with pytest.raises(InputError) as info:
        check_input(torch.zeros(2, 3, 8, 8), (1, 8, 8))
    assert "(B, 1, 8, 8)" in str(info.value) and "(2, 3, 8, 8)" in str(info.value)


def test_check_input_rejects_non_tensor() -> None:
    with pytest.raises(InputError, match="torch.Tensor"):
        check_input([[0.0]], (1, 8, 8))  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_check_input_accepts_float_batches(dtype: torch.dtype) -> None:
    check_input(torch.zeros(3, 1, 8, 8, dtype=dtype), (1, 8, 8))
    check_input(torch.zeros(0, 1, 8, 8, dtype=dtype), (1, 8, 8))


def test_forward_checks_input() -> None:
    net = MultiExitNetwork.from_sequential(_sequential(), [1, 3], _exits, (1, 8, 8))
    with pytest.raises(InputError):
        net(torch.zeros(2, 2, 8, 8))
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError):
        net(x)


def test_input_error_is_a_value_error() -> None:
    assert issubclass(InputError, ValueError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_of_another_float_dtype_is_refused_by_name(dtype: torch.dtype) -> None:
    stages = split_sequential(_sequential(), [1])
    net = MultiExitNetwork(stages, _exits, (1, 8, 8))
    x = torch.randn(2, 1, 8, 8).to(dtype)
    with pytest.raises(InputError, match=f"expected float32 input .* got {str(dtype).removeprefix('torch.')}"):
        net(x)


def test_meta_tensor_is_refused() -> None:
    with pytest.raises(InputError, match="meta tensor"):
        check_input(torch.empty(1, 1, 8, 8, device="meta"), (1, 8, 8))
