"""MAC and parameter accounting of stages and exits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bofexits.evaluation.cost import CostTable, count_macs, measure_costs


@pytest.mark.parametrize(
    "cin, cout, k, stride, pad, batch, hw",
    [
        (3, 5, 3, 1, 1, 2, (6, 7)),
        (1, 4, 3, 2, 1, 1, (8, 8)),
        (4, 2, 1, 1, 0, 3, (5, 5)),
        (2, 3, 5, 1, 0, 1, (9, 6)),
    ],
)
def test_conv2d_macs(
    cin: int, cout: int, k: int, stride: int, pad: int, batch: int, hw: tuple[int, int]
) -> None:
    conv = nn.Conv2d(cin, cout, k, stride, pad)
    x = torch.zeros(batch, cin, *hw)
    ho = (hw[0] + 2 * pad - k) // stride + 1
    wo = (hw[1] + 2 * pad - k) // stride + 1
    assert count_macs(lambda: conv(x)) == batch * cout * cin * k * k * ho * wo


@pytest.mark.parametrize("fin, fout, batch", [(7, 4, 3), (1, 1, 1), (16, 10, 2)])
def test_linear_macs(fin: int, fout: int, batch: int) -> None:
    lin = nn.Linear(fin, fout)
    assert count_macs(lambda: lin(torch.zeros(batch, fin))) == batch * fin * fout


def test_elementwise_work_is_not_counted() -> None:
    x = torch.randn(4, 8)
    assert count_macs(lambda: torch.relu(x).softmax(1).sum()) == 0


def test_stage_macs_sum_to_the_backbone(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(dtype=torch.float32)
    costs = measure_costs(net)
    full = count_macs(lambda: net.forward_backbone(torch.zeros(1, *net.input_shape)))
    assert costs.backbone_macs == sum(costs.stage_macs) == full
    # 3x3 conv 2 -> 4 on 8x8; stride-2 conv 4 -> 6 to 4x4; conv 6 -> 8 on 4x4; Linear 8 -> 5
    assert costs.stage_macs == [2 * 4 * 9 * 64, 4 * 6 * 9 * 16, 6 * 8 * 9 * 16, 8 * 5]


def test_exit_macs_formula(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    # BoF exit = codebook 1x1 conv (K*C*H*W) + classifier (K' * classes); K = 4, 5 classes.
    costs = measure_costs(tiny_net_factory(dtype=torch.float32))
    assert costs.exit_macs == [4 * 4 * 64 + 4 * 5, 4 * 6 * 16 + 4 * 5, 4 * 8 * 16 + 4 * 5]


def test_exit_macs_with_pool_and_reduction(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(dtype=torch.float32, reduce_channels=3, pools=[2, 1, 1], spatial_level=1)
    costs = measure_costs(net)
    # exit 0: 8x8 pooled to 4x4, then reduce 4 -> 3, codebook 4 x 3, classifier 16 -> 5
    assert costs.exit_macs[0] == 4 * 3 * 16 + 4 * 3 * 16 + 16 * 5
    assert costs.exit_macs[1] == 6 * 3 * 16 + 4 * 3 * 16 + 16 * 5


def test_parameter_counts(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(dtype=torch.float32)
    costs = measure_costs(net)
    assert costs.stage_params == [sum(p.numel() for p in s.parameters()) for s in net.stages]
    assert costs.stage_params[0] == 2 * 4 * 9 + 4
    assert costs.exit_params == sum(p.numel() for p in net.exits.parameters())
    assert costs.backbone_params == sum(costs.stage_params)


def test_measure_costs_restores_training_mode(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    net = tiny_net_factory(dtype=torch.float32).train()
    measure_costs(net)
    assert net.training
    net.eval()
    measure_costs(net)
    assert not net.training


TABLE = CostTable(stage_macs=[10, 20, 30, 40], exit_macs=[1, 2, 3], stage_params=[5, 6, 7, 8], exit_params=9)


def test_macs_at_exit_is_cumulative() -> None:
    # exit i pays stages 0..i and exits 0..i; the final exit pays every stage and every early exit.
    assert TABLE.macs_at_exit() == [11, 33, 66, 106]
    assert TABLE.backbone_macs == 100 and TABLE.backbone_params == 26


def test_macs_for_indexes_by_exit() -> None:
    got = TABLE.macs_for(torch.tensor([3, 0, 1, 1, 2]))
    assert got.dtype == torch.float64
    assert got.tolist() == [106.0, 11.0, 33.0, 33.0, 66.0]
    assert TABLE.macs_for(torch.tensor([], dtype=torch.long)).shape == (0,)


def test_to_dict() -> None:
    d = TABLE.to_dict()
    assert d["stage_macs"] == [10, 20, 30, 40] and d["exit_macs"] == [1, 2, 3]
    assert d["backbone_macs"] == 100 and d["backbone_params"] == 26 and d["exit_params"] == 9
    assert d["macs_at_exit"] == [11, 33, 66, 106]


def test_measured_final_exit_costs_backbone_plus_exits(tiny_net_factory) -> None:  # type: ignore[no-untyped-def]
    costs = measure_costs(tiny_net_factory(dtype=torch.float32))
    assert costs.macs_at_exit()[-1] == costs.backbone_macs + sum(costs.exit_macs)
    assert costs.macs_at_exit()[0] == costs.stage_macs[0] + costs.exit_macs[0]
