"""The optimiser and learning-rate schedule of a training phase.

Each phase gets a fresh optimiser over the parameters it trains (exits, stages or all; in
fine-tuning the stages and the exits as two groups with their own peak rates), with
a linear warm-up over the first 5% of the phase's steps and a cosine decay to zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bofexits.config import TrainConfig
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["make_optimizer"]


def make_optimizer(
    cfg: TrainConfig, model: MultiExitNetwork, phase: str, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser over what `phase` trains, and its schedule over the phase's `steps`."""
    groups: list[dict[str, Any]]
    if phase == "exits":
        groups = [{"params": list(model.exits.parameters()), "lr": cfg.exit_lr}]
    elif phase == "backbone":
        groups = [{"params": list(model.stages.parameters()), "lr": cfg.lr}]
    elif phase == "finetune":  # the stages move slowly under exits that already work
        groups = [
            {"params": list(model.stages.parameters()), "lr": cfg.finetune_lr},
            {"params": list(model.exits.parameters()), "lr": cfg.finetune_exit_lr},
        ]
    else:
        groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)
