"""What grows epoch by epoch, and the checkpoint writes that keep it.

A run starts fresh (`start_fresh`) or continues from its checkpoint (`resume_from`); after each epoch
`save_epoch` writes everything `resume_from` needs, and `write_final` completes the checkpoint with
the calibration and what deployment reads (class names, normalisation). Only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bofexits.config import FINETUNE_KEYS, TrainConfig, from_dict, stored_config
from bofexits.errors import CheckpointError, ConfigError
from bofexits.policies.calibration import ExitCalibration
from bofexits.training.checkpoint import (
    check_training_state,
    load_checkpoint,
    load_model,
    load_state_into,
    save_checkpoint,
    update_checkpoint,
)
from bofexits.training.loss import epochs_before_finetuning, phases
from bofexits.training.run import Run
from bofexits.training.teacher import make_teacher

__all__ = ["Progress", "adds_finetuning", "resume_from", "save_epoch", "start_fresh", "write_final"]

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What grows epoch by epoch and each checkpoint saves."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    codebooks_ready: bool = False
    resumed_from: dict[str, Any] | None = None  # the checkpoint read on resume (optimiser state)
    teacher: nn.Sequential | None = None  # fine-tuning's frozen teacher, once fine-tuning has begun


def resume_from(run: Run) -> Progress:
    """Weights, history and RNG from the run's checkpoint, which must hold the same config."""
    state = load_checkpoint(run.ckpt_path)
    check_training_state(state, run.ckpt_path, len(run.phases))
    saved, epoch = from_dict(stored_config(state["config"])), int(state["epoch"])
    if saved != run.cfg and not adds_finetuning(saved, run.cfg, epoch):
        raise CheckpointError(
            f"{run.ckpt_path} was written with a different config; resume with the same options or use a "
            "new --out (only the fine-tuning settings may change, and only before fine-tuning has begun)"
        )
    load_state_into(run.model, state.get("model"), f"checkpoint {run.ckpt_path}")
    teacher = None
    tuned = epoch - epochs_before_finetuning(run.phases)  # fine-tuning epochs done
    if tuned > 0 and run.cfg.finetune_distill > 0 and state.get("teacher") is None:
        raise CheckpointError(
            f"checkpoint {run.ckpt_path} is {tuned} epoch(s) into fine-tuning but holds no teacher to distil "
            "from; resume from an intact checkpoint, or start a new run in another --out"
        )
    if state.get("teacher") is not None:
        teacher = make_teacher(run.model)
        load_state_into(teacher, state["teacher"], f"checkpoint {run.ckpt_path} (fine-tuning teacher)")
    torch.set_rng_state(state["rng"])
    if run.world.is_main:
        log.info("resuming %s after epoch %d of %d", run.ckpt_path, epoch, len(run.phases))
    return Progress(epoch, list(state["history"]), bool(state.get("codebooks_ready")), state, teacher)


def adds_finetuning(saved: TrainConfig, cfg: TrainConfig, epoch: int) -> bool:
    """Whether `cfg` is the `saved` run's config with other fine-tuning settings, none of them used yet.

    A finished two-phase or frozen run can then be fine-tuned in place (`train --resume
    --finetune-epochs N`): the fine-tuning settings do not touch the epochs before them, so the
    checkpoint is exactly what the new config would have written by then.
    """
    unchanged = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in FINETUNE_KEYS})
    return unchanged == cfg and epoch <= epochs_before_finetuning(phases(cfg))


def start_fresh(run: Run, run_dir: Path) -> Progress:
    """A fresh run: refuse to overwrite one, and in frozen mode take the donor's backbone.

    (Frozen on your own classifier's weights: `build_model` loaded them already.)
    """
    if run.ckpt_path.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    source = run.cfg.backbone_checkpoint
    if run.cfg.mode == "frozen" and source:
        donor, _, _ = load_model(source)
        load_state_into(run.model.stages, donor.stages.state_dict(), f"backbone checkpoint {source}")
    return Progress()


def save_epoch(
    run: Run,
    state: Progress,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    phase: str,
) -> None:
    """The checkpoint `resume_from` continues from: everything but the calibration."""
    save_checkpoint(
        run.ckpt_path,
        {
            "config": run.cfg.to_dict(),
            "model": run.model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": state.epoch,
            "phase": phase,
            "history": state.history,
            "rng": torch.get_rng_state(),
            "codebooks_ready": state.codebooks_ready,
            "teacher": state.teacher.state_dict() if state.teacher is not None else None,
            "calibration": None,
        },
    )


def write_final(run: Run, state: Progress, calibrations: dict[str, ExitCalibration]) -> None:
    """The complete checkpoint: final weights, the calibration and what deployment needs."""
    update_checkpoint(
        run.ckpt_path,
        config=run.cfg.to_dict(),
        model=run.model.state_dict(),
        history=state.history,
        calibration={k: c.to_dict() for k, c in calibrations.items()},
        epoch=len(run.phases),
        teacher=None,  # needed only while fine-tuning: the finished checkpoint stays the network's size
        complete=True,
        # What deployment needs to preprocess and name outputs without the training files.
        data={
            "classes": list(run.train_set.classes),
            "mean": list(run.train_set.mean),
            "std": list(run.train_set.std),
        },
    )
