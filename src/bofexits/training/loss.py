"""What each epoch trains and the loss it minimises (docs/method.md §4).

A run is a list of phases, one per epoch: "joint" trains everything on the weighted loss of
all exits, "backbone" trains the stages on the final classifier alone, "exits" trains the
exit heads on a frozen backbone, and "finetune" (after "exits") trains everything again on
the weighted loss, with the final exit also distilled from the network as it was before
fine-tuning. The phase decides the forward pass, the train/eval mode of the backbone and
which exits the loss counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bofexits.config import TrainConfig
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["epochs_before_finetuning", "forward", "loss", "phases", "set_train_mode"]


def phases(cfg: TrainConfig) -> list[str]:
    """The phase of each epoch: "joint", "backbone", "exits" or "finetune"."""
    if cfg.mode == "joint":
        return ["joint"] * cfg.epochs
    finetune = ["finetune"] * cfg.finetune_epochs
    if cfg.mode == "frozen":
        return ["exits"] * cfg.epochs + finetune
    return ["backbone"] * cfg.epochs + ["exits"] * cfg.exit_epochs + finetune


def epochs_before_finetuning(run_phases: Sequence[str]) -> int:
    """How many epochs of `run_phases` come before fine-tuning (all of them when it has none).

    >>> epochs_before_finetuning(["backbone", "exits", "finetune", "finetune"])
    2
    """
    return sum(1 for p in run_phases if p != "finetune")


def _kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened outputs, scaled by T^2 so its gradients keep their size as T changes."""
    soft = F.log_softmax(teacher.detach() / temperature, 1)
    kl = F.kl_div(F.log_softmax(student / temperature, 1), soft, log_target=True, reduction="batchmean")
    return kl * temperature**2


def loss(
    outputs: list[torch.Tensor],
    y: torch.Tensor,
    weights: list[float],
    phase: str,
    distill: float = 0.0,
    temperature: float = 1.0,
    teacher: torch.Tensor | None = None,
    teacher_weight: float = 0.0,
) -> torch.Tensor:
    """The weighted loss of the exits a phase trains (docs/method.md §4).

    With `distill` > 0 each early exit also learns the final classifier's softened outputs
    (self-distillation): the final exit knows which wrong classes are close, and an early
    exit that learns this ranks its confidence more like the network it stands in for.
    The teacher is detached, so the final classifier learns from the labels alone.

    In "finetune", `teacher` holds the frozen pre-fine-tuning network's final logits and the
    final exit learns (1 - teacher_weight) x cross-entropy + teacher_weight x their softened
    outputs: the stages change under the final classifier, and the teacher holds it to what it
    knew (distilling the early exits lowered them, docs/decisions.md; this protects the last).
    """
    if phase == "backbone":
        return F.cross_entropy(outputs[-1], y)
    final = outputs[-1]
    if phase == "exits":  # the final classifier is frozen with the backbone
        weights, outputs = weights[:-1], outputs[:-1]
    losses = torch.stack([F.cross_entropy(o, y) for o in outputs])  # (S,) or (S-1,)
    if distill > 0:
        early = outputs if phase == "exits" else outputs[:-1]
        kd = torch.stack([_kd(o, final, temperature) for o in early])
        losses = torch.cat([(1 - distill) * losses[: len(kd)] + distill * kd, losses[len(kd) :]])
    if phase == "finetune" and teacher is not None and teacher_weight > 0:
        last = (1 - teacher_weight) * losses[-1] + teacher_weight * _kd(final, teacher, temperature)
        losses = torch.cat([losses[:-1], last.unsqueeze(0)])
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
