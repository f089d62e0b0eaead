"""Compute accounting: MACs and parameters of each stage and each exit, counted by running them.

MACs are counted with `torch.utils.flop_counter` (convolutions and matrix products;
elementwise work such as the BoF softmax is not in that count, which is why wall-clock is
measured too). A sample's compute is the sum over the stages and exits that ran for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, require
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["CostTable", "count_macs", "measure_costs"]


def count_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of one call of `fn` (FLOPs / 2 as counted by FlopCounterMode).

    >>> count_macs(lambda: torch.nn.Linear(3, 2)(torch.zeros(1, 3)))
    6
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class CostTable:
    """Per-sample cost of each part of a multi-exit network.

    Attributes:
        stage_macs: S stage MACs; their sum is the plain backbone.
        exit_macs: S-1 early-exit MACs (BoF layer + classifier).
        stage_params: S stage parameter counts.
        exit_params: parameters of all exit heads together (shared classifier counted once).
    """

    stage_macs: list[int]
    exit_macs: list[int]
    stage_params: list[int]
    exit_params: int
    schema_version: int = SCHEMA_VERSION

    @property
    def backbone_macs(self) -> int:
        return sum(self.stage_macs)

    @property
    def backbone_params(self) -> int:
        return sum(self.stage_params)

    def macs_at_exit(self) -> list[int]:
        """MACs a sample costs when it leaves at exit i: stages 1..i and exits 1..i (all ran)."""
        out, total = [], 0
        for i, m in enumerate(self.stage_macs):
            total += m
            if i < len(self.exit_macs):
                total += self.exit_macs[i]
            out.append(total)
        return out

    def macs_for(self, exit_index: torch.Tensor) -> torch.Tensor:
        """(B,) MACs of what ran for each sample, from its 0-based exit index."""
        return torch.tensor(self.macs_at_exit(), dtype=torch.float64)[exit_index]

    @property
    def first_exit_fraction(self) -> float:
        """What leaving at exit 1 costs, as a fraction of the backbone's MACs: the least any rule spends."""
        return self.macs_at_exit()[0] / self.backbone_macs

    @property
    def exit_macs_fraction(self) -> float:
        """All exit heads' MACs as a fraction of the backbone's."""
        return sum(self.exit_macs) / self.backbone_macs

    @property
    def exit_params_fraction(self) -> float:
        """All exit heads' parameters as a fraction of the backbone's."""
        return self.exit_params / self.backbone_params

    def to_dict(self) -> dict[str, Any]:
        """The counts, plus the derived totals a reader of the JSON wants (ignored by `from_dict`)."""
        return {
            "stage_macs": list(self.stage_macs),
            "exit_macs": list(self.exit_macs),
            "stage_params": list(self.stage_params),
            "exit_params": self.exit_params,
            "backbone_macs": self.backbone_macs,
            "backbone_params": self.backbone_params,
            "macs_at_exit": self.macs_at_exit(),
            "schema_version": self.schema_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostTable:
        check_schema(data, "cost table")
        require(data, "cost table", "stage_macs", "exit_macs", "stage_params", "exit_params")
        return cls(
            list(data["stage_macs"]), list(data["exit_macs"]), list(data["stage_params"]), data["exit_params"]
        )


@torch.no_grad()
def measure_costs(model: MultiExitNetwork) -> CostTable:
    """Run every stage and exit once on a single zero input and count what each did."""
    was_training = model.training
    model.eval()
    first = next(model.parameters())
    x = torch.zeros(1, *model.input_shape, dtype=first.dtype, device=first.device)  # where the model is
    stage_macs, exit_macs = [], []
    state: torch.Tensor | None = None
    for i, stage in enumerate(model.stages):
        stage_macs.append(count_macs(partial(stage, x)))
        x = stage(x)
        if i < model.exits.num_exits:
            exit_macs.append(count_macs(partial(model.exits.step, i, x, state)))
            _, state = model.exits.step(i, x, state)
    model.train(was_training)
    return CostTable(stage_macs, exit_macs, [_params(s) for s in model.stages], _params(model.exits))
