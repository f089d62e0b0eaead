"""Evaluation: every exit's logits, real adaptive inference over a dataset, and its summary."""

from __future__ import annotations

import torch

from bofexits.data import ImageDataset
from bofexits.devices import device_of, place_model
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.metrics import accuracy, balance, exit_distribution, relative_compute
from bofexits.evaluation.points import Point
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.models.multiexit import MultiExitNetwork

__all__ = ["RUNTIME_BATCH", "collect_logits", "collect_runtime_logits", "run_adaptive", "summarize"]

RUNTIME_BATCH = 256
"""The batches evaluation runs the runtime in: real early exit and the logits simulations replay."""


@torch.no_grad()
def collect_logits(
    model: MultiExitNetwork,
    data: ImageDataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Logits of all S exits for every sample (runs every stage: for analysis, not for speed).

    Args:
        model: the network; moved to `device` when one is given.
        data: the samples, read in order.
        device: where to run (`bofexits.devices.resolve_device` names); None: where the model is.
        batch_size: samples per forward pass.

    Returns:
        ([(N, classes)] * S on CPU, labels (N,)).
    """
    device = place_model(model, device)
    was_training = model.training
    model.eval()
    outs: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits)]
    labels = []
    for x, y in data.batches(batch_size, shuffle=False):
        for store, logits in zip(outs, model(x.to(device)), strict=True):
            store.append(logits.float().cpu())
        labels.append(y)
    model.train(was_training)
    return [torch.cat(o) for o in outs], torch.cat(labels)


@torch.inference_mode()
def collect_runtime_logits(
    runtime: AdaptiveRuntime, data: ImageDataset, *, batch_size: int = RUNTIME_BATCH
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Logits of all S exits for every sample, computed as `runtime.run_batched` computes them.

    The runtime's inference forms (folded BatchNorm, channels-last batches, frozen exits) round
    differently from the training forms `collect_logits` runs: a few ulps. A score that sits on
    a threshold (Fashion-MNIST has near-duplicates across its splits, so a test score can equal
    a calibration score, and a threshold with it) then exits in one and not in the other. The
    simulation of a rule (`bofexits.inference.offline.simulate`) replays the runtime's decisions
    exactly only on the runtime's own arithmetic, so evaluation simulates on these logits, in the
    runtime's batches (the first exit sees the very batches `run_adaptive` feeds it).

    Returns:
        ([(N, classes)] * S on CPU, labels (N,)).
    """
    where = device_of(*runtime.stages)
    outs: list[list[torch.Tensor]] = [[] for _ in runtime.stages]
    labels = []
    for x, y in data.batches(batch_size, shuffle=False):
        h, state = x.to(where), None
        for i, store in enumerate(outs):  # `step` is what `run_batched` runs, batch of one included
            h, logits, state = runtime.step(i, h, state)
            store.append(logits.float().cpu())
        labels.append(y)
    return [torch.cat(o) for o in outs], torch.cat(labels)


def run_adaptive(
    runtime: AdaptiveRuntime, data: ImageDataset, *, batch_size: int = RUNTIME_BATCH
) -> tuple[ExitResult, torch.Tensor]:
    """Real early exit over a dataset in batches; returns the joined result (on the CPU) and the labels.

    Each batch is moved to where the runtime's stages are (a GPU, when the model was there when
    the runtime was built), and each result back.
    """
    where = device_of(*runtime.stages)
    logits, exits, labels = [], [], []
    for x, y in data.batches(batch_size, shuffle=False):
        r = runtime(x.to(where))
        logits.append(r.logits.cpu())
        exits.append(r.exit_index.cpu())
        labels.append(y)
    return ExitResult(torch.cat(logits), torch.cat(exits)), torch.cat(labels)


def summarize(
    predictions: torch.Tensor,
    exit_index: torch.Tensor,
    labels: torch.Tensor,
    costs: CostTable,
    *,
    knob: str | None = None,
    value: float | None = None,
    index: int | None = None,
) -> Point:
    """Accuracy, compute (counted from the exits taken), exit fractions and balance, as a `Point`.

    Args:
        predictions: (N,) predicted classes.
        exit_index: (N,) 0-based exit each sample took.
        labels: (N,) true classes.
        costs: per-part MACs of the network.
        knob, value, index: which policy point this is (see `Point`).
    """
    macs = costs.macs_for(exit_index)
    fractions = exit_distribution(exit_index, len(costs.stage_macs))
    return Point(
        accuracy=accuracy(predictions, labels),
        mean_macs=float(macs.mean()),
        relative_macs=relative_compute(macs, costs.backbone_macs),
        exit_fractions=fractions,
        balance=balance(fractions),
        knob=knob,
        value=value,
        index=index,
    )
