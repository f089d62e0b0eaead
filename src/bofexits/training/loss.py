"""What each epoch trains and the loss it minimises (docs/method.md §4).

A run is a list of phases, one per epoch: "joint" trains everything on the weighted loss of
all exits, "backbone" trains the stages on the final classifier alone, "exits" trains the
exit heads on a frozen backbone. The phase decides the forward pass, the train/eval mode of
the backbone and which exits the loss counts.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from bofexits.config import TrainConfig
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["forward", "loss", "phases", "set_train_mode"]


def phases(cfg: TrainConfig) -> list[str]:
    """The phase of each epoch: "joint", "backbone" or "exits"."""
    if cfg.mode == "joint":
        return ["joint"] * cfg.epochs
    if cfg.mode == "frozen":
        return ["exits"] * cfg.epochs
    return ["backbone"] * cfg.epochs + ["exits"] * cfg.exit_epochs


def loss(
    outputs: list[torch.Tensor],
    y: torch.Tensor,
    weights: list[float],
    phase: str,
    distill: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The weighted loss of the exits a phase trains (docs/method.md §4).

    With `distill` > 0 each early exit also learns the final classifier's softened outputs
    (self-distillation): the final exit knows which wrong classes are close, and an early
    exit that learns this ranks its confidence more like the network it stands in for.
    The teacher is detached, so the final classifier learns from the labels alone.
    """
    if phase == "backbone":
        return F.cross_entropy(outputs[-1], y)
    final = outputs[-1]
    if phase == "exits":  # the final classifier is frozen with the backbone
        weights, outputs = weights[:-1], outputs[:-1]
    losses = torch.stack([F.cross_entropy(o, y) for o in outputs])  # (S,) or (S-1,)
    if distill > 0:
        soft = F.log_softmax(final.detach() / temperature, 1)
        early = outputs if phase == "exits" else outputs[:-1]
        kd = torch.stack(
            [
                F.kl_div(F.log_softmax(o / temperature, 1), soft, log_target=True, reduction="batchmean")
                * temperature**2
                for o in early
            ]
        )
        losses = torch.cat([(1 - distill) * losses[: len(kd)] + distill * kd, losses[len(kd) :]])
    return (losses * torch.tensor(weights, device=losses.device)).sum() / sum(weights)


def forward(model: MultiExitNetwork, x: torch.Tensor, phase: str) -> list[torch.Tensor]:
    """The outputs `loss` reads: the final logits alone in "backbone", else every exit's and the final's."""
    if phase == "backbone":
        return [model.forward_backbone(x)]
    with torch.no_grad() if phase == "exits" else contextlib.nullcontext():  # frozen backbone: no graph
        maps, final = model.features(x)
    return [*model.exits(maps), final]


def set_train_mode(model: MultiExitNetwork, phase: str) -> None:
    """Training mode, except the stages of a frozen backbone, whose BN statistics stay as trained."""
    model.train()
    if phase == "exits":
        model.stages.eval()
