"""The frozen teacher of joint fine-tuning: the network's stages as they were before it began.

Fine-tuning moves the backbone so that its early features serve the exits; the final
classifier, which the user's accuracy is measured on, then learns partly from what this
frozen copy says (`loss.loss`, `TrainConfig.finetune_distill`). The copy is taken once, at
the first fine-tuning epoch, and saved with every fine-tuning checkpoint so that a resumed run
distils from the same teacher, not from the half-tuned network it resumes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["make_teacher", "teacher_logits"]


def make_teacher(model: MultiExitNetwork, state: Mapping[str, torch.Tensor] | None = None) -> nn.Sequential:
    """A frozen copy of `model`'s stages, chained as the plain backbone runs them, in eval mode;
    with `state`, those weights loaded into it (its keys are the stages' own: "0.0.weight", ...).

    `state` is a saved teacher's `state_dict` (a resumed fine-tuning run); the caller has checked
    it with `checkpoint.load_state_into`'s rules.
    """
    teacher = nn.Sequential(*copy.deepcopy(list(model.stages)))
    if state is not None:
        teacher.load_state_dict(dict(state))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_logits(teacher: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The teacher's final logits for the batch `x`, with no graph: it only ever gives targets."""
    return teacher(x)
