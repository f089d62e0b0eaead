"""Training: joint weighted loss over all exits, frozen-backbone and two-phase modes (docs/method.md §4).

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
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bofexits._io import RunLock, clean_stale_temps, write_json
from bofexits.config import CALIBRATION_SPLITS, MODES, OPTIMIZERS, TrainConfig, check_ranges, from_dict
from bofexits.data import ImageDataset, Transform, compose, random_crop, random_horizontal_flip
from bofexits.data.registry import run_splits
from bofexits.devices import resolve_device  # re-exported: its home is bofexits.devices
from bofexits.errors import CheckpointError, ConfigError
from bofexits.evaluation.collect import collect_logits
from bofexits.models.backbones import backbone_options
from bofexits.models.build import build_model
from bofexits.models.exits import ExitHeads
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import ExitCalibration
from bofexits.policies.scores import SCORES
from bofexits.training import distributed
from bofexits.training.checkpoint import (
    check_training_state,
    load_checkpoint,
    load_model,
    load_state_into,
    save_checkpoint,
    update_checkpoint,
)
from bofexits.training.distributed import World

__all__ = ["TrainResult", "resolve_device", "train"]

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


def _validate(cfg: TrainConfig, num_exits: int) -> list[float]:
    check_ranges(cfg)  # the Python API skips `resolve_config`, which checks them for the CLI
    if cfg.mode not in MODES:
        raise ConfigError(f"unknown training mode {cfg.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.calibration_split not in CALIBRATION_SPLITS:
        raise ConfigError(
            f"calibration_split must be one of {', '.join(CALIBRATION_SPLITS)}, got {cfg.calibration_split!r}"
        )
    if cfg.epochs < 0 or cfg.exit_epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0 or cfg.exit_lr <= 0:
        raise ConfigError("epochs and exit_epochs must be >= 0, batch_size >= 1, lr and exit_lr > 0")
    if cfg.mode == "frozen" and not cfg.backbone_checkpoint:
        raise ConfigError("frozen mode trains exits on a trained backbone: pass --backbone-checkpoint PATH")
    weights = cfg.exit_weights if cfg.exit_weights is not None else [1.0] * num_exits
    if len(weights) != num_exits or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"exit_weights needs {num_exits} non-negative values (final exit last), got {weights}"
        )
    return [float(w) for w in weights]


def _phases(cfg: TrainConfig) -> list[str]:
    """The phase of each epoch: "joint", "backbone" or "exits"."""
    if cfg.mode == "joint":
        return ["joint"] * cfg.epochs
    if cfg.mode == "frozen":
        return ["exits"] * cfg.epochs
    return ["backbone"] * cfg.epochs + ["exits"] * cfg.exit_epochs


def _make_optimizer(
    cfg: TrainConfig, model: MultiExitNetwork, phase: str, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
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


def _loss(
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


def _forward(model: MultiExitNetwork, x: torch.Tensor, phase: str) -> list[torch.Tensor]:
    if phase == "backbone":
        return [model.forward_backbone(x)]
    with torch.no_grad() if phase == "exits" else contextlib.nullcontext():  # frozen backbone: no graph
        maps, final = model.features(x)
    return [*model.exits(maps), final]


def _set_train_mode(model: MultiExitNetwork, phase: str) -> None:
    model.train()
    if phase == "exits":
        model.stages.eval()  # BN statistics of a frozen backbone stay as trained


@torch.no_grad()
def kmeans_init(
    model: MultiExitNetwork, data: ImageDataset, images: int, seed: int, device: torch.device
) -> None:
    """Initialise every exit's codebook by k-means on features of `images` training images.

    Heads without a data-dependent initialisation (the baselines) are left alone.
    """
    if type(model.exits).init_from_features is ExitHeads.init_from_features:
        return
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=gen)[: max(1, images)]
    sub = data.subset(idx)
    model.eval()
    maps_per_exit: list[list[torch.Tensor]] = [[] for _ in range(model.exits.num_exits)]
    for x, _ in sub.batches(256, shuffle=False):
        maps, _ = model.features(x.to(device))
        for store, m in zip(maps_per_exit, maps, strict=True):
            store.append(m.cpu())
    model.exits.cpu().init_from_features([torch.cat(m) for m in maps_per_exit], generator=gen)
    model.to(device)


def _collect_logits(
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


def _evaluate_exits(
    model: MultiExitNetwork, data: ImageDataset, device: torch.device, world: World = distributed.ONE_PROCESS
) -> list[float]:
    logits, labels = _collect_logits(model, data, device, world)
    return [float((lg.argmax(1) == labels).float().mean()) for lg in logits]


def _kmeans_once(run: _Run) -> None:
    """k-means codebooks on rank 0 (the same seeded work on every rank would be wasted), then shared."""
    if run.world.is_main:
        kmeans_init(run.model, run.train_set, run.cfg.kmeans_images, run.cfg.seed, run.device)
    distributed.broadcast_module(run.model.exits)


@dataclass
class _Run:
    """What stays fixed for a whole run, built before its first epoch."""

    cfg: TrainConfig
    model: MultiExitNetwork
    train_set: ImageDataset
    val_set: ImageDataset
    test: ImageDataset
    device: torch.device
    weights: list[float]
    phases: list[str]
    transform: Transform | None
    ckpt_path: Path
    world: World = distributed.ONE_PROCESS

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set) / self.cfg.batch_size)


@dataclass
class _Progress:
    """What grows epoch by epoch and each checkpoint saves."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    codebooks_ready: bool = False
    resumed_from: dict[str, Any] | None = None  # the checkpoint read on resume (optimiser state)


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
        run = _set_up(cfg, run_dir / CHECKPOINT, world)
        if world.distributed:
            distributed.check_same_config(json.dumps([run.cfg.to_dict(), resume], sort_keys=True), world)
            distributed.check_batch_size(run.cfg.batch_size, len(run.train_set), world)
        state = _resume(run) if resume else _start(run, run_dir)
        run.model.to(run.device)
        distributed.broadcast_module(run.model)  # every rank starts from rank 0's weights, as under DDP
        if world.is_main:
            write_json(run_dir / "config.json", run.cfg.to_dict())
        _train_epochs(run, state, progress=progress and world.is_main, on_epoch=on_epoch)
        calibrations = _finish(run, state)
    return TrainResult(run.ckpt_path, run.model.cpu().eval(), calibrations, state.history, run.test)


def _set_up(cfg: TrainConfig, ckpt_path: Path, world: World = distributed.ONE_PROCESS) -> _Run:
    """Threads, device, the three splits and a freshly built (seeded) network, all checked.

    Every rank builds the same network from the same seed; under torchrun each rank takes the
    GPU of its LOCAL_RANK.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    train_set, val_set, test = run_splits(cfg)
    cfg = _fit_network_to_data(cfg, train_set)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    weights = _validate(cfg, model.num_exits)
    _check_dataset(model, train_set)
    transform = _augmentation(train_set, cfg.crop_padding, flip=cfg.flip) if cfg.augment else None
    return _Run(
        cfg, model, train_set, val_set, test, device, weights, _phases(cfg), transform, ckpt_path, world
    )


def _fit_network_to_data(cfg: TrainConfig, train_set: ImageDataset) -> TrainConfig:
    """`cfg` with what the data decides filled in, so the stored config rebuilds the same network.

    An image folder's classes are its sub-folders; a backbone that takes any input size (the
    `tv:` ones) takes the dataset's square images at their size unless `image_size` is set.
    """
    model_cfg = cfg.model
    if cfg.dataset == "image-folder" and model_cfg.num_classes != len(train_set.classes):
        model_cfg = dataclasses.replace(model_cfg, num_classes=len(train_set.classes))
    height, width = (int(n) for n in train_set.images.shape[-2:])
    any_size = "image_size" in backbone_options(model_cfg.backbone)
    if any_size and model_cfg.image_size is None and height == width:
        model_cfg = dataclasses.replace(model_cfg, image_size=height)
    return cfg if model_cfg == cfg.model else dataclasses.replace(cfg, model=model_cfg)


def _resume(run: _Run) -> _Progress:
    """Weights, history and RNG from the run's checkpoint, which must hold the same config."""
    state = load_checkpoint(run.ckpt_path)
    check_training_state(state, run.ckpt_path, len(run.phases))
    if from_dict(state["config"]) != run.cfg:
        raise CheckpointError(
            f"{run.ckpt_path} was written with a different config; resume with the same options or use a "
            "new --out"
        )
    load_state_into(run.model, state.get("model"), f"checkpoint {run.ckpt_path}")
    torch.set_rng_state(state["rng"])
    if run.world.is_main:
        log.info("resuming %s after epoch %d of %d", run.ckpt_path, int(state["epoch"]), len(run.phases))
    return _Progress(int(state["epoch"]), list(state["history"]), bool(state.get("codebooks_ready")), state)


def _start(run: _Run, run_dir: Path) -> _Progress:
    """A fresh run: refuse to overwrite one, and in frozen mode take the donor's backbone."""
    if run.ckpt_path.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if run.cfg.mode == "frozen":
        source = run.cfg.backbone_checkpoint
        assert source is not None
        donor, _, _ = load_model(source)
        load_state_into(run.model.stages, donor.stages.state_dict(), f"backbone checkpoint {source}")
    return _Progress()


def _train_epochs(
    run: _Run, state: _Progress, *, progress: bool, on_epoch: Callable[[int], None] | None
) -> None:
    """Every remaining epoch, a new optimiser at each phase change, a checkpoint after each."""
    opt: torch.optim.Optimizer | None = None
    sched: torch.optim.lr_scheduler.LambdaLR | None = None
    first = state.epoch
    for epoch in range(first, len(run.phases)):
        phase = run.phases[epoch]
        if phase != "backbone" and not state.codebooks_ready:
            _kmeans_once(run)
            state.codebooks_ready = True
        if opt is None or sched is None or epoch == 0 or run.phases[epoch - 1] != phase:
            opt, sched = _phase_optimizer(run, phase, state.resumed_from if epoch == first else None)
        t0 = time.perf_counter()
        loss = _train_one_epoch(run, epoch, opt, sched, progress=progress)
        record = {
            "epoch": epoch + 1,
            "phase": phase,
            "loss": loss,
            "val_acc": _evaluate_exits(run.model, run.val_set, run.device, run.world),
            "seconds": time.perf_counter() - t0,
        }
        state.epoch = epoch + 1
        state.history.append(record)
        if run.world.is_main:
            _log_epoch(record, len(run.phases))
            _save_epoch(run, state, opt, sched, phase)
        distributed.barrier()  # no rank runs ahead (or stops) before the checkpoint is whole
        if on_epoch is not None:
            on_epoch(epoch + 1)


def _phase_optimizer(
    run: _Run, phase: str, resumed_from: dict[str, Any] | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and schedule of a phase, restored when resuming inside that phase."""
    opt, sched = _make_optimizer(run.cfg, run.model, phase, run.steps_per_epoch * run.phases.count(phase))
    if resumed_from is not None and resumed_from.get("phase") == phase:
        opt.load_state_dict(resumed_from["optimizer"])
        sched.load_state_dict(resumed_from["scheduler"])
    return opt, sched


def _train_one_epoch(
    run: _Run,
    epoch: int,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
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
    _set_train_mode(run.model, phase)
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
    with distributed.data_parallel(run.model, params, partial(_forward, phase=phase), run.device) as net:
        for x, y in bar:
            step_total, step_seen = _step(run, net, phase, opt, x, y)
            sched.step()
            total += step_total
            seen += step_seen
    if world.distributed:
        sums = distributed.all_reduce_sum(torch.tensor([total, float(seen)], dtype=torch.float64))
        total, seen = float(sums[0]), int(sums[1])
        distributed.broadcast_buffers(run.model)
    return total / max(1, seen)


def _step(
    run: _Run,
    net: Callable[[torch.Tensor], list[torch.Tensor]],
    phase: str,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
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
    loss = _loss(net(x), y, run.weights, phase, run.cfg.distill, run.cfg.distill_temperature)
    opt.zero_grad(set_to_none=True)
    (loss * weight).backward()  # weight 1 in one process
    opt.step()
    return (loss.item() * len(y), len(y)) if weight else (0.0, 0)


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


def _save_epoch(
    run: _Run,
    state: _Progress,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    phase: str,
) -> None:
    """The checkpoint `resume` continues from: everything but the calibration."""
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
            "calibration": None,
        },
    )


def _finish(run: _Run, state: _Progress) -> dict[str, ExitCalibration]:
    """Calibrate the proposed rule and mark the checkpoint complete, with what deployment reads."""
    if not state.codebooks_ready:  # zero epochs of exit training: still start from k-means codebooks
        _kmeans_once(run)
    split = run.train_set if run.cfg.calibration_split == "train" else run.val_set
    calibrations = calibrate(run.model, split, run.device, world=run.world)
    if run.world.is_main:
        _write_final(run, state, calibrations)
    distributed.barrier()
    return calibrations


def _write_final(run: _Run, state: _Progress, calibrations: dict[str, ExitCalibration]) -> None:
    update_checkpoint(
        run.ckpt_path,
        config=run.cfg.to_dict(),
        model=run.model.state_dict(),
        history=state.history,
        calibration={k: c.to_dict() for k, c in calibrations.items()},
        epoch=len(run.phases),
        complete=True,
        # What deployment needs to preprocess and name outputs without the training files.
        data={
            "classes": list(run.train_set.classes),
            "mean": list(run.train_set.mean),
            "std": list(run.train_set.std),
        },
    )


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
    logits, labels = _collect_logits(model, data, device, world)
    return {score: ExitCalibration.fit(logits[:-1], score, labels.cpu()) for score in SCORES}


def _augmentation(data: ImageDataset, padding: int, *, flip: bool = True) -> Transform | None:
    """A random crop if padding > 0, then a horizontal flip if `flip`; None when neither applies.

    The crop pads with normalised black (for colour images, black averaged over the channels:
    `random_crop` takes one fill value).
    """
    parts: list[Transform] = []
    if padding > 0:
        fill = sum(-m / s for m, s in zip(data.mean, data.std, strict=True)) / len(data.mean)
        parts.append(partial(random_crop, padding=padding, fill=fill))
    if flip:
        parts.append(partial(random_horizontal_flip, p=0.5))
    return compose(*parts) if parts else None


def _check_dataset(model: MultiExitNetwork, data: ImageDataset) -> None:
    shape = tuple(data.images.shape[1:])
    if shape != model.input_shape:
        raise ConfigError(
            f"the dataset's images are {shape} but the network expects {model.input_shape}; "
            "pick a backbone for this input shape"
        )
    if len(data.classes) != model.num_classes:
        raise ConfigError(
            f"the dataset has {len(data.classes)} classes, the network {model.num_classes}; "
            "set num_classes to match"
        )
