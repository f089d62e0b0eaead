"""The optimiser and learning-rate schedule of a training phase.

Each phase gets a fresh optimiser over the parameters it trains (exits, stages or all), with
a linear warm-up over the first 5% of the phase's steps and a cosine decay to zero.
"""

from __future__ import annotations

import math

import torch

from bofexits.config import TrainConfig
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["make_optimizer"]


def make_optimizer(
    cfg: TrainConfig, model: MultiExitNetwork, phase: str, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser over what `phase` trains, and its schedule over the phase's `steps`."""
    if phase == "exits":
        params = list(model.exits.parameters())
    elif phase == "backbone":
        params = list(model.stages.parameters())
    else:
        params = list(model.parameters())
    lr = cfg.exit_lr if phase == "exits" else cfg.lr
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        )
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)
