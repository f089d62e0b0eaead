"""Training: joint weighted loss over all exits, frozen-backbone and two-phase modes, and joint
fine-tuning after them (docs/method.md §4).

This module is the loop itself: epochs, optimiser steps and when to checkpoint. Its parts
live beside it: `run` (set-up and checks before the first epoch), `loss` (phases, forward
pass, the weighted loss), `optim` (optimiser and schedule), `codebooks` (k-means),
`calibrate` (logits over a split, gathered across ranks), `teacher` (the frozen copy that
fine-tuning distils the final exit from) and `progress` (start, resume and checkpoint writes).

Every epoch ends with an atomic checkpoint (model, optimiser, schedule, RNG, history and
the resolved config); `resume=True` continues an interrupted run from it. After the last
epoch the proposed rule is calibrated and stored in the same checkpoint.

Under torchrun the same loop runs data-parallel (`training.distributed`, docs/distributed.md):
each rank trains on its rows of every global batch through DistributedDataParallel;
k-means runs on rank 0 and is broadcast; validation and calibration logits are computed on
each rank's shard and gathered, so every rank holds the single-process numbers; rank 0 alone
logs, shows progress and writes the checkpoint, and the others wait for it at a barrier.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bofexits._io import RunLock, clean_stale_temps, write_json
from bofexits.config import TrainConfig
from bofexits.data import ImageDataset
from bofexits.devices import resolve_device  # re-exported: its home is bofexits.devices
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibration import ExitCalibration
from bofexits.training import distributed
from bofexits.training.calibrate import calibrate, exit_accuracies
from bofexits.training.codebooks import kmeans_init, kmeans_once
from bofexits.training.distributed import World
from bofexits.training.loss import forward, loss, set_train_mode
from bofexits.training.optim import make_optimizer
from bofexits.training.progress import Progress, resume_from, save_epoch, start_fresh, write_final
from bofexits.training.run import Run, set_up
from bofexits.training.teacher import make_teacher, teacher_logits

# calibrate and kmeans_init are re-exported: callers imported them from here before the split.
__all__ = ["CHECKPOINT", "TrainResult", "calibrate", "kmeans_init", "resolve_device", "train"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    """What `train` leaves behind."""

    checkpoint: Path
    model: MultiExitNetwork
    calibrations: dict[str, ExitCalibration]
    history: list[dict[str, Any]]
    test: ImageDataset


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int], None] | None = None,
    dist_timeout: timedelta = distributed.DEFAULT_TIMEOUT,
) -> TrainResult:
    """Train a multi-exit network as `cfg` says, checkpointing into `run_dir` every epoch.

    The steps: set up data and network, start fresh or resume, train each phase's epochs
    (k-means codebooks before the first epoch that trains exits), then calibrate.

    Args:
        cfg: resolved training config (stored in the checkpoint and `config.json`).
        run_dir: output folder; holds `checkpoint.pt` and `config.json`.
        resume: continue from `run_dir/checkpoint.pt` (must have been written with the same config).
        progress: show tqdm bars.
        on_epoch: called after each checkpoint with the completed epoch (tests interrupt here).
        dist_timeout: under torchrun, how long a collective waits for the other ranks before
            the job fails (a dead or stuck rank must not hang the others forever).
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)  # a GPU that is not there fails before the run folder is made
    with distributed.process_group(device, dist_timeout) as world:
        try:
            return _train_in(cfg, run_dir, world, resume=resume, progress=progress, on_epoch=on_epoch)
        except Exception as exc:
            if world.distributed:  # torchrun's summary names the rank too; this names it in the log
                log.error("rank %d of %d failed: %s: %s", world.rank, world.size, type(exc).__name__, exc)
            raise


def _train_in(
    cfg: TrainConfig,
    run_dir: Path,
    world: World,
    *,
    resume: bool,
    progress: bool,
    on_epoch: Callable[[int], None] | None,
) -> TrainResult:
    """`train` inside the process group (one process: no group); rank 0 alone locks and writes."""
    lock = RunLock(run_dir) if world.is_main else contextlib.nullcontext()
    with lock:  # a second run on this folder would silently overwrite this one
        if world.is_main:
            clean_stale_temps(run_dir)  # left by a kill inside a checkpoint write
        run = set_up(cfg, run_dir / CHECKPOINT, world)
        if world.distributed:
            distributed.check_same_config(json.dumps([run.cfg.to_dict(), resume], sort_keys=True), world)
            distributed.check_batch_size(run.cfg.batch_size, len(run.train_set), world)
        state = resume_from(run) if resume else start_fresh(run, run_dir)
        run.model.to(run.device)
        distributed.broadcast_module(run.model)  # every rank starts from rank 0's weights, as under DDP
        if world.is_main:
            write_json(run_dir / "config.json", run.cfg.to_dict())
        _train_epochs(run, state, progress=progress and world.is_main, on_epoch=on_epoch)
        calibrations = _finish(run, state)
    return TrainResult(run.ckpt_path, run.model.cpu().eval(), calibrations, state.history, run.test)


def _train_epochs(
    run: Run, state: Progress, *, progress: bool, on_epoch: Callable[[int], None] | None
) -> None:
    """Every remaining epoch, a new optimiser at each phase change, a checkpoint after each."""
    opt: torch.optim.Optimizer | None = None
    sched: torch.optim.lr_scheduler.LambdaLR | None = None
    first = state.epoch
    for epoch in range(first, len(run.phases)):
        phase = run.phases[epoch]
        if phase != "backbone" and not state.codebooks_ready:
            _kmeans(run)
            state.codebooks_ready = True
        if phase == "finetune" and state.teacher is None and run.cfg.finetune_distill > 0:
            state.teacher = make_teacher(run.model)  # the network as the frozen-backbone phases left it
        if state.teacher is not None:
            state.teacher.to(run.device)
        if opt is None or sched is None or epoch == 0 or run.phases[epoch - 1] != phase:
            opt, sched = _phase_optimizer(run, phase, state.resumed_from if epoch == first else None)
        t0 = time.perf_counter()
        epoch_loss = _train_one_epoch(run, epoch, opt, sched, state.teacher, progress=progress)
        record = {
            "epoch": epoch + 1,
            "phase": phase,
            "loss": epoch_loss,
            "val_acc": exit_accuracies(run.model, run.val_set, run.device, run.world),
            "seconds": time.perf_counter() - t0,
        }
        state.epoch = epoch + 1
        state.history.append(record)
        if run.world.is_main:
            _log_epoch(record, len(run.phases))
            save_epoch(run, state, opt, sched, phase)
        distributed.barrier()  # no rank runs ahead (or stops) before the checkpoint is whole
        if on_epoch is not None:
            on_epoch(epoch + 1)


def _kmeans(run: Run) -> None:
    """The run's k-means codebooks (rank 0 computes, every rank receives)."""
    kmeans_once(run.model, run.train_set, run.cfg.kmeans_images, run.cfg.seed, run.device, run.world)


def _phase_optimizer(
    run: Run, phase: str, resumed_from: dict[str, Any] | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and schedule of a phase, restored when resuming inside that phase."""
    opt, sched = make_optimizer(run.cfg, run.model, phase, run.steps_per_epoch * run.phases.count(phase))
    if resumed_from is not None and resumed_from.get("phase") == phase:
        opt.load_state_dict(resumed_from["optimizer"])
        sched.load_state_dict(resumed_from["scheduler"])
    return opt, sched


def _train_one_epoch(
    run: Run,
    epoch: int,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    teacher: torch.nn.Sequential | None,
    *,
    progress: bool,
) -> float:
    """One pass over the training set (shuffled by a per-epoch seed); the mean loss.

    Under torchrun every rank draws the same global batches (same permutation, same
    augmentation) and trains on its rows of each (`distributed.shard`) through
    `DistributedDataParallel`, whose averaged gradients are the single-process ones (`_step`).
    """
    phase = run.phases[epoch]
    world = run.world
    set_train_mode(run.model, phase)
    gen = torch.Generator().manual_seed(run.cfg.seed * 1000 + epoch)
    total, seen = 0.0, 0
    bar = tqdm(
        run.train_set.batches(run.cfg.batch_size, shuffle=True, generator=gen, transform=run.transform),
        total=run.steps_per_epoch,
        disable=not progress,
        desc=f"epoch {epoch + 1}/{len(run.phases)} {phase}",
        leave=False,
    )
    params = [p for group in opt.param_groups for p in group["params"]]
    with distributed.data_parallel(run.model, params, partial(forward, phase=phase), run.device) as net:
        for x, y in bar:
            step_total, step_seen = _step(run, net, phase, opt, x, y, teacher)
            sched.step()
            total += step_total
            seen += step_seen
    if world.distributed:
        sums = distributed.all_reduce_sum(torch.tensor([total, float(seen)], dtype=torch.float64))
        total, seen = float(sums[0]), int(sums[1])
        distributed.broadcast_buffers(run.model)
    return total / max(1, seen)


def _step(
    run: Run,
    net: Callable[[torch.Tensor], list[torch.Tensor]],
    phase: str,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher: torch.nn.Sequential | None = None,
) -> tuple[float, int]:
    """One optimiser step on the global batch `(x, y)`; this rank's (loss sum, samples).

    Under torchrun `net` is the DistributedDataParallel wrapper and this rank trains on its
    rows of the batch; DDP averages the ranks' gradients, so each rank's loss is weighted by
    world x its share of the batch, and the average is the single-process gradient. A rank
    with no row (a last batch smaller than the world) still runs one image with weight zero,
    so every rank takes part in every all-reduce.
    """
    batch, world = len(y), run.world
    x, y = distributed.shard(x, world), distributed.shard(y, world)
    weight = world.size * len(y) / batch
    if not len(y):
        x, y = x.new_zeros((1, *x.shape[1:])), y.new_zeros((1,))
    x, y = x.to(run.device), y.to(run.device)
    soft = teacher_logits(teacher, x) if teacher is not None and phase == "finetune" else None
    cfg = run.cfg
    value = loss(
        net(x),
        y,
        run.weights_of(phase),
        phase,
        cfg.distill,
        cfg.distill_temperature,
        soft,
        cfg.finetune_distill,
    )
    opt.zero_grad(set_to_none=True)
    (value * weight).backward()  # weight 1 in one process
    opt.step()
    return (value.item() * len(y), len(y)) if weight else (0.0, 0)


def _log_epoch(record: dict[str, Any], epochs: int) -> None:
    log.info(
        "epoch %d/%d %s loss %.4f val acc per exit %s (%.0fs)",
        record["epoch"],
        epochs,
        record["phase"],
        record["loss"],
        " ".join(f"{a:.4f}" for a in record["val_acc"]),
        record["seconds"],
    )


def _finish(run: Run, state: Progress) -> dict[str, ExitCalibration]:
    """Calibrate the proposed rule and mark the checkpoint complete, with what deployment reads."""
    if not state.codebooks_ready:  # zero epochs of exit training: still start from k-means codebooks
        _kmeans(run)
    split = run.train_set if run.cfg.calibration_split == "train" else run.val_set
    calibrations = calibrate(run.model, split, run.device, world=run.world)
    if run.world.is_main:
        write_final(run, state, calibrations)
    distributed.barrier()
    return calibrations
