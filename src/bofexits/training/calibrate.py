"""Logits over a whole split on one or many processes: validation accuracy and calibration.

Under torchrun each rank computes the logits of its shard and all are gathered, so every
rank holds the single-process numbers (docs/distributed.md).
"""

from __future__ import annotations

import torch

from bofexits.data import ImageDataset
from bofexits.evaluation.collect import collect_logits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibration import ExitCalibration
from bofexits.policies.scores import SCORES
from bofexits.training import distributed
from bofexits.training.distributed import World

__all__ = ["calibrate", "exit_accuracies", "gathered_logits"]


def gathered_logits(
    model: MultiExitNetwork, data: ImageDataset, device: torch.device | None, world: World
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`collect_logits` over all of `data`, each rank computing its shard; every rank gets all of it."""
    if not world.distributed:
        return collect_logits(model, data, device=device)
    mine = collect_logits(
        model, data.subset(distributed.shard(torch.arange(len(data)), world)), device=device
    )
    parts = distributed.all_gather_object(mine)
    logits = [distributed.interleave([p[0][i] for p in parts]) for i in range(len(mine[0]))]
    return logits, distributed.interleave([p[1] for p in parts])


def exit_accuracies(
    model: MultiExitNetwork, data: ImageDataset, device: torch.device, world: World = distributed.ONE_PROCESS
) -> list[float]:
    """Each exit's accuracy on `data` (the final classifier last)."""
    logits, labels = gathered_logits(model, data, device, world)
    return [float((lg.argmax(1) == labels).float().mean()) for lg in logits]


def calibrate(
    model: MultiExitNetwork,
    data: ImageDataset,
    device: torch.device | None = None,
    max_samples: int = 20000,
    *,
    world: World = distributed.ONE_PROCESS,
) -> dict[str, ExitCalibration]:
    """Fit the proposed rule's per-exit statistics on `data` (no augmentation), for every score.

    Under torchrun (`world`) each rank computes the logits of its shard and all are gathered,
    so every rank fits the statistics on the whole split, the single-process ones.
    """
    if len(data) > max_samples:
        data = data.subset(
            torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:max_samples]
        )
    logits, labels = gathered_logits(model, data, device, world)
    return {score: ExitCalibration.fit(logits[:-1], score, labels.cpu()) for score in SCORES}
