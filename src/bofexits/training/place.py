"""Cost-aware exit placement: exits at every boundary, kept only where they pay (`bofexits place`).

From a trained run: candidate exits at every unit of its frozen backbone are trained together
(`bofexits.training.candidates`); `bofexits.training.subsets` picks the subset whose validation
knee is cheapest; the kept exits (their codebooks and the classifier) move into an ordinary
`MultiExitNetwork` whose stages end at the kept units (`ModelConfig.exit_points`), are
re-trained together for `retrain_epochs`, recalibrated, and written as a normal run folder
(`checkpoint.pt`, `config.json`, plus `placement.json`), which sweep, export and serve read.
The test set is never read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from bofexits._io import ensure_writable_dir, write_json
from bofexits.config import ModelConfig, TrainConfig
from bofexits.data import ImageDataset
from bofexits.errors import CheckpointError, ConfigError
from bofexits.models.bof import BoFPooling
from bofexits.models.build import build_model
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.models.placement import fine_units
from bofexits.policies.calibration import ExitCalibration
from bofexits.training.calibrate import calibrate, exit_accuracies
from bofexits.training.candidates import (
    CandidateExit,
    Candidates,
    check_points,
    copy_backbone,
    train_candidates,
)
from bofexits.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from bofexits.training.loss import forward, loss, set_train_mode
from bofexits.training.optim import make_optimizer
from bofexits.training.run import augmentation
from bofexits.training.subsets import PLACEMENT_COSTS, SubsetScore, choose_subset, score_subset

__all__ = [
    "Placement",
    "finish",
    "place",
    "placed_network",
    "search",
    "write_placed_run",
]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class Placement:
    """What `place` did: the candidates, the subset kept and the run it wrote."""

    checkpoint: Path
    candidates: list[CandidateExit]
    kept: list[int]
    exit_points: list[int]
    cost: str
    backbone_macs: int
    backbone_ms: float
    chosen: SubsetScore
    default: SubsetScore | None
    subsets_scored: int
    val_accuracy_before_retrain: list[float]
    val_accuracy: list[float]
    seconds: dict[str, float] = field(default_factory=dict)
    candidate_net: MultiExitNetwork | None = None  # for callers that measure more; not written

    def to_dict(self) -> dict[str, Any]:
        def subset(s: SubsetScore | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "kept": s.keep,
                "exit_points": [self.candidates[i].point for i in s.keep],
                "val_knee_macs": s.knee_macs,
                "val_knee_objective": s.objective,
                "val_knee_accuracy": None if s.knee is None else s.knee.accuracy,
                "val_knee_head_ms": s.head_ms,
                "val_exit_accuracy": s.exit_accuracy,
            }

        return {
            "checkpoint": str(self.checkpoint),
            "cost": self.cost,
            "backbone_macs": self.backbone_macs,
            "backbone_ms": self.backbone_ms,
            "candidates": [dataclasses.asdict(c) for c in self.candidates],
            "kept": self.kept,
            "exit_points": self.exit_points,
            "chosen": subset(self.chosen),
            "default": subset(self.default),
            "subsets_scored": self.subsets_scored,
            "val_accuracy_before_retrain": self.val_accuracy_before_retrain,
            "val_accuracy": self.val_accuracy,
            "seconds": self.seconds,
        }


def placed_network(
    candidates: MultiExitNetwork, cand_cfg: ModelConfig, keep: Sequence[int]
) -> tuple[MultiExitNetwork, ModelConfig]:
    """An ordinary network keeping the candidate exits `keep`: their codebooks, the classifier(s).

    Its config records the kept units (`exit_points`) and pre-pool factors (`exit_pools`), so
    the checkpoint rebuilds it.
    """
    assert cand_cfg.exit_points is not None
    exits: BoFExits = candidates.exits  # type: ignore[assignment]
    pools = [int(cast(BoFPooling, exits.bof[i]).pool) for i in keep]
    cfg = dataclasses.replace(cand_cfg, exit_points=[cand_cfg.exit_points[i] for i in keep], exit_pools=pools)
    net = build_model(cfg, load_weights=False)
    copy_backbone(candidates, net)
    target: BoFExits = net.exits  # type: ignore[assignment]
    for k, i in enumerate(keep):
        target.bof[k].load_state_dict(exits.bof[i].state_dict())
    if len(exits.classifiers) == 1:
        target.classifiers[0].load_state_dict(exits.classifiers[0].state_dict())
    else:
        for k, i in enumerate(keep):
            target.classifiers[k].load_state_dict(exits.classifiers[i].state_dict())
    return net.eval(), cfg


def _retrain(
    net: MultiExitNetwork, cfg: TrainConfig, data: ImageDataset, epochs: int, device: torch.device
) -> None:
    """The kept exits together, on the frozen backbone, with the training loss of the exits phase."""
    if epochs <= 0:
        return
    steps = epochs * -(-len(data) // cfg.batch_size)
    opt, sched = make_optimizer(cfg, net, "exits", steps)
    transform = augmentation(data, cfg.crop_padding, flip=cfg.flip) if cfg.augment else None
    gen = torch.Generator().manual_seed(cfg.seed + 23)
    weights = [1.0] * net.num_exits
    for _ in range(epochs):
        set_train_mode(net, "exits")
        for x, y in data.batches(cfg.batch_size, shuffle=True, generator=gen, transform=transform):
            x, y = x.to(device), y.to(device)
            value = loss(forward(net, x, "exits"), y, weights, "exits", cfg.distill, cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
    net.eval()


def search(
    cands: Candidates, cost: str = "macs", grid: int = 100
) -> tuple[SubsetScore, list[SubsetScore], SubsetScore | None]:
    """The best subset for `cost`, every subset scored, and the backbone's default positions
    scored the same way (None when they are not all candidates)."""
    if cost not in PLACEMENT_COSTS:
        raise ConfigError(f"unknown placement cost {cost!r}; choose one of {', '.join(PLACEMENT_COSTS)}")
    exits: BoFExits = cands.net.exits  # type: ignore[assignment]
    cfg = cands.source_cfg
    evaluate = partial(
        score_subset,
        val=cands.val_cache,
        cal=cands.cal_cache,
        classify=exits.classify,
        aggregation=exits.aggregation,
        unit_macs=cands.unit_macs,
        points=cands.points,
        head_macs=cands.head_macs,
        head_ms=cands.head_ms,
        backbone_ms=cands.backbone_ms,
        cost=cost,
        score=cfg.score,
        variant=cfg.variant,
        grid=grid,
    )
    with torch.no_grad():
        best, seen = choose_subset(len(cands.points), evaluate)
        default_points = _default_points(cfg.model)
        default = None
        if default_points is not None and set(default_points) <= set(cands.points):
            default = evaluate([cands.points.index(p) for p in default_points])
    return best, seen, default


def finish(
    cands: Candidates, keep: Sequence[int], retrain_epochs: int = 1, device: str = "cpu"
) -> tuple[MultiExitNetwork, TrainConfig, dict[str, ExitCalibration], list[float], list[float]]:
    """The network keeping candidates `keep`, re-trained `retrain_epochs` epochs and recalibrated
    as training calibrates: (network, its run config, calibrations, validation accuracy per exit
    before and after re-training)."""
    where = torch.device(device)
    cfg = cands.source_cfg
    net, placed_cfg = placed_network(cands.net, cands.model_cfg, keep)
    net.to(where)
    before = exit_accuracies(net, cands.val, where)
    _retrain(net, cfg, cands.train, retrain_epochs, where)
    after = exit_accuracies(net, cands.val, where)
    run_cfg = dataclasses.replace(cfg, model=placed_cfg, exit_weights=None)
    calibrations = calibrate(net, cands.train if cfg.calibration_split == "train" else cands.val, where)
    return net.cpu().eval(), run_cfg, calibrations, before, after


def place(
    checkpoint: str | Path,
    out: str | Path,
    *,
    epochs: int = 3,
    retrain_epochs: int = 1,
    cost: str = "macs",
    data_dir: str | None = None,
    threads: int | None = None,
    points: Sequence[int] | None = None,
    calibration_images: int = 5000,
    timing_images: int = 100,
    timing_rounds: int = 3,
    grid: int = 100,
    device: str = "cpu",
) -> Placement:
    """Place exits on a trained run's backbone where they pay, and write the placed run to `out`.

    Args:
        checkpoint: a finished run's `checkpoint.pt` (its backbone stays frozen).
        out: the new run folder; refused when it already holds a run.
        epochs: epochs of candidate-exit training (at the run's `exit_lr`).
        retrain_epochs: epochs re-training the kept exits together (0: keep them as trained).
        cost: "macs" (each head at its counted MACs; ties broken by batch-1 head time) or
            "time" (each head at its measured batch-1 time, in MACs at the backbone's rate).
        data_dir: where the run's dataset is (None: the run's own).
        threads: torch threads (None: torch's default).
        points: candidate unit indices (None: every unit that yields a map, `candidate_points`).
        calibration_images: calibration-split images the subset search calibrates on.
        timing_images, timing_rounds: batch-1 images and interleaved rounds timing the heads.
        grid: beta values tried per subset (`beta_grid`).
        device: where training runs ("cpu" or a CUDA name); heads are timed on the CPU.

    Raises:
        ConfigError: a run folder already at `out`, a non-BoF run, a bad option.
        CheckpointError: an unfinished or unreadable checkpoint.
    """
    if cost not in PLACEMENT_COSTS:
        raise ConfigError(f"unknown placement cost {cost!r}; choose one of {', '.join(PLACEMENT_COSTS)}")
    if epochs < 1 or retrain_epochs < 0:
        raise ConfigError(
            f"--epochs must be >= 1 and --retrain-epochs >= 0, got {epochs} and {retrain_epochs}"
        )
    out = Path(out)
    if (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} already holds a run; choose another --out")
    if threads:
        torch.set_num_threads(threads)
    model, calibrations, cfg = load_model(checkpoint)
    if cfg.score not in calibrations:
        raise CheckpointError(
            f"{checkpoint} has no calibration (training did not finish); finish training first"
        )
    check_points(model, points)  # bad points are refused before anything is created
    ensure_writable_dir(out)
    cands = train_candidates(
        model,
        cfg,
        epochs=epochs,
        points=points,
        data_dir=data_dir,
        calibration_images=calibration_images,
        timing_images=timing_images,
        timing_rounds=timing_rounds,
        device=device,
    )
    seconds = dict(cands.seconds)
    clock = time.perf_counter()
    best, seen, default = search(cands, cost, grid)
    seconds["search"] = time.perf_counter() - clock
    clock = time.perf_counter()
    net, run_cfg, new_cal, before, after = finish(cands, best.keep, retrain_epochs, device)
    seconds["retrain_and_calibrate"] = time.perf_counter() - clock
    result = Placement(
        checkpoint=out / CHECKPOINT,
        candidates=cands.table(),
        kept=best.keep,
        exit_points=list(run_cfg.model.exit_points or []),
        cost=cost,
        backbone_macs=sum(cands.unit_macs),
        backbone_ms=cands.backbone_ms,
        chosen=best,
        default=default,
        subsets_scored=len(seen),
        val_accuracy_before_retrain=before,
        val_accuracy=after,
        seconds=seconds,
        candidate_net=cands.net,
    )
    write_placed_run(out, net, run_cfg, new_cal, load_checkpoint(checkpoint), result)
    log.info("placed exits after units %s (of candidates %s)", result.exit_points, cands.points)
    return result


def write_placed_run(
    out: Path,
    net: MultiExitNetwork,
    run_cfg: TrainConfig,
    calibrations: dict[str, ExitCalibration],
    source: dict[str, Any],
    result: Placement,
) -> None:
    """`checkpoint.pt` (complete: what evaluate, export and serve read), `config.json`, `placement.json`."""
    save_checkpoint(
        out / CHECKPOINT,
        {
            "config": run_cfg.to_dict(),
            "model": net.state_dict(),
            "history": source.get("history", []),
            "calibration": {k: c.to_dict() for k, c in calibrations.items()},
            "epoch": source.get("epoch"),
            "complete": True,
            "data": source.get("data"),
            "placement": {k: v for k, v in result.to_dict().items() if k != "candidates"},
        },
    )
    write_json(out / "config.json", run_cfg.to_dict())
    write_json(out / "placement.json", result.to_dict())


def _default_points(cfg: ModelConfig) -> list[int] | None:
    """The units the backbone's default stages end at (None when the run is already placed)."""
    if cfg.exit_points is not None:
        return None
    stages = build_model(dataclasses.replace(cfg, exit_pools=None), load_weights=False).stages
    ends, count = [], 0
    for stage in list(stages)[:-1]:
        count += len(fine_units([stage]))
        ends.append(count - 1)
    return ends
