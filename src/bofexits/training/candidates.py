"""Candidate exits at every unit of a trained run's frozen backbone, trained, cached and costed.

The first step of cost-aware placement (`bofexits.training.place`). Candidate BoF exits after
every unit of the backbone that yields a map (`bofexits.models.placement`) are trained together
on the run's frozen backbone at its `exit_lr`. In each batch a random half of the candidates is
kept and the running mean runs over those alone, so the shared classifier learns the aggregate
of any subset, the thing the subset search (`bofexits.training.subsets`) then scores from the
outputs cached here, with each head's counted MACs and its batch-1 time measured interleaved
with the plain backbone's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bofexits.config import ModelConfig, TrainConfig
from bofexits.data import ImageDataset
from bofexits.errors import ConfigError
from bofexits.evaluation.cost import count_macs
from bofexits.evaluation.timing import interleaved_timing
from bofexits.models.build import build_model
from bofexits.models.exits import BoFExits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.models.placement import candidate_points, fine_units, regroup, unit_shapes
from bofexits.training.codebooks import kmeans_init
from bofexits.training.loss import set_train_mode
from bofexits.training.optim import make_optimizer
from bofexits.training.run import augmentation
from bofexits.training.splits import run_splits
from bofexits.training.subsets import CachedOutputs, subset_logits

__all__ = [
    "CandidateExit",
    "Candidates",
    "candidate_network",
    "check_points",
    "copy_backbone",
    "train_candidates",
]

log = logging.getLogger(__name__)


@dataclass
class CandidateExit:
    """One candidate position and what its exit costs.

    Attributes:
        point: index of the backbone unit the exit follows (`fine_units`).
        unit: that unit's layer type (e.g. "MaxPool2d", "Sequential" for conv-BN-ReLU).
        map_shape: (C, H, W) the exit reads.
        backbone_share: MACs of the units up to it, a fraction of the backbone's.
        head_macs: the head's counted MACs (BoF layer and classifier).
        head_ms: the head's measured batch-1 time (median of interleaved rounds), ms.
        val_accuracy: validation accuracy of this exit kept alone.
    """

    point: int
    unit: str
    map_shape: list[int]
    backbone_share: float
    head_macs: int
    head_ms: float
    val_accuracy: float


def copy_backbone(source: MultiExitNetwork, target: MultiExitNetwork) -> None:
    """The source's trained units into the target's (same units, stages cut elsewhere)."""
    src, dst = fine_units(source.stages), fine_units(target.stages)
    if len(src) != len(dst):
        raise ConfigError(f"the backbones differ: {len(src)} units against {len(dst)}")
    for a, b in zip(src, dst, strict=True):
        b.load_state_dict(a.state_dict())


def candidate_network(
    model: MultiExitNetwork, cfg: ModelConfig, points: Sequence[int]
) -> tuple[MultiExitNetwork, ModelConfig]:
    """`model`'s trained backbone with fresh exits after the units at `points`, and its config."""
    if cfg.exit_head != "bof":
        raise ConfigError(f"placement places BoF exits; this run has {cfg.exit_head!r} exits")
    cand_cfg = dataclasses.replace(cfg, exit_points=list(points), exit_pools=None)
    net = build_model(cand_cfg, load_weights=False)
    copy_backbone(model, net)
    return net, cand_cfg


def _train_candidates(
    net: MultiExitNetwork, cfg: TrainConfig, data: ImageDataset, epochs: int, device: torch.device
) -> None:
    """Train every candidate exit on the frozen backbone, a random half of them per batch."""
    exits: BoFExits = net.exits  # type: ignore[assignment]
    n = exits.num_exits
    steps = epochs * -(-len(data) // cfg.batch_size)
    opt, sched = make_optimizer(cfg, net, "exits", max(1, steps))
    transform = augmentation(data, cfg.crop_padding, flip=cfg.flip) if cfg.augment else None
    gen = torch.Generator().manual_seed(cfg.seed + 22)
    for epoch in range(epochs):
        set_train_mode(net, "exits")
        batches = data.batches(cfg.batch_size, shuffle=True, generator=gen, transform=transform)
        total, seen = 0.0, 0
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                maps, _ = net.features(x)
            mask = torch.rand(n, generator=gen) < 0.5
            if not bool(mask.any()):
                mask[torch.randint(n, (1,), generator=gen)] = True
            keep = [int(i) for i in torch.nonzero(mask).flatten()]
            hists = {i: exits.histogram(i, maps[i]) for i in keep}
            logits = subset_logits(hists, keep, exits.classify, exits.aggregation)
            value = torch.stack([F.cross_entropy(lg, y) for lg in logits]).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            total, seen = total + value.item() * len(y), seen + len(y)
        log.info("candidate exits: epoch %d/%d loss %.4f", epoch + 1, epochs, total / max(1, seen))


@torch.no_grad()
def _cache(net: MultiExitNetwork, data: ImageDataset, device: torch.device) -> CachedOutputs:
    net.eval()
    exits: BoFExits = net.exits  # type: ignore[assignment]
    hists: list[list[torch.Tensor]] = [[] for _ in range(exits.num_exits)]
    finals, labels = [], []
    for x, y in data.batches(512, shuffle=False):
        maps, final = net.features(x.to(device))
        for store, i in zip(hists, range(exits.num_exits), strict=True):
            store.append(exits.histogram(i, maps[i]).cpu())
        finals.append(final.cpu())
        labels.append(y)
    return CachedOutputs([torch.cat(h) for h in hists], torch.cat(finals), torch.cat(labels))


@torch.no_grad()
def _unit_macs(units: Sequence[nn.Module], input_shape: Sequence[int]) -> list[int]:
    """Counted MACs of each unit (eval mode: a zero image must not reach BatchNorm statistics)."""
    modes = [(m, m.training) for u in units for m in u.modules()]
    x = torch.zeros(1, *input_shape)
    out = []
    try:
        for u in units:
            u.eval()
            out.append(count_macs(partial(u, x)))
            x = u(x)
    finally:
        for m, mode in modes:
            m.training = mode
    return out


@torch.no_grad()
def _head_costs(
    net: MultiExitNetwork, images: torch.Tensor, rounds: int
) -> tuple[list[int], list[float], float]:
    """Each candidate head's counted MACs and batch-1 ms, and the plain backbone's batch-1 ms.

    The heads and the backbone are timed interleaved in the same rounds (`interleaved_timing`),
    each head on the maps its unit produces for the same images.
    """
    net.eval()
    exits: BoFExits = net.exits  # type: ignore[assignment]
    maps, _ = net.features(images)
    macs = [
        count_macs(partial(lambda i, m: exits.classify(i, exits.histogram(i, m)), i, m[:1]))
        for i, m in enumerate(maps)
    ]
    singles = [images[j : j + 1] for j in range(images.shape[0])]
    runs: dict[str, Any] = {"backbone": net.forward_backbone}
    inputs: dict[str, list[torch.Tensor]] = {"backbone": singles}
    for i, m in enumerate(maps):
        runs[f"head{i}"] = partial(lambda i, f: exits.classify(i, exits.histogram(i, f)), i)
        inputs[f"head{i}"] = [m[j : j + 1] for j in range(m.shape[0])]
    timing = interleaved_timing(runs, inputs, reference="backbone", rounds=rounds)
    return macs, [timing.median(f"head{i}") * 1e3 for i in range(len(maps))], timing.median("backbone") * 1e3


@dataclass
class Candidates:
    """Trained candidate exits on a run's frozen backbone, with their cached outputs and costs.

    `train_candidates` makes it; `search` and `finish` read it, so one candidate training
    serves several searches (e.g. both costs, in benchmarks/placement.py).
    """

    source_cfg: TrainConfig
    net: MultiExitNetwork
    model_cfg: ModelConfig
    points: list[int]
    units: list[nn.Module]
    shapes: list[tuple[int, ...]]
    train: ImageDataset
    val: ImageDataset
    val_cache: CachedOutputs
    cal_cache: CachedOutputs
    unit_macs: list[int]
    head_macs: list[int]
    head_ms: list[float]
    backbone_ms: float
    seconds: dict[str, float]

    def table(self) -> list[CandidateExit]:
        """One row per candidate: where it is, what it costs, how accurate it is alone on validation."""
        exits: BoFExits = self.net.exits  # type: ignore[assignment]
        total = sum(self.unit_macs)
        return [
            CandidateExit(
                point=p,
                unit=_unit_name(self.units[p]),
                map_shape=list(self.shapes[p]),
                backbone_share=sum(self.unit_macs[: p + 1]) / total,
                head_macs=self.head_macs[i],
                head_ms=self.head_ms[i],
                val_accuracy=_alone_accuracy(self.val_cache, exits, i),
            )
            for i, p in enumerate(self.points)
        ]


def check_points(model: MultiExitNetwork, points: Sequence[int] | None) -> list[int]:
    units = fine_units(model.stages)
    cands = list(points) if points is not None else candidate_points(unit_shapes(units, model.input_shape))
    if not cands:
        raise ConfigError("the backbone offers no unit with a map an exit can read; nothing to place")
    regroup(units, cands)  # refuses bad points in one line
    return cands


def train_candidates(
    model: MultiExitNetwork,
    cfg: TrainConfig,
    *,
    epochs: int = 3,
    points: Sequence[int] | None = None,
    data_dir: str | None = None,
    calibration_images: int = 5000,
    timing_images: int = 100,
    timing_rounds: int = 3,
    device: str = "cpu",
) -> Candidates:
    """Candidate exits at `points` (default: every unit with a map) on `model`'s frozen backbone,
    trained `epochs` epochs; their validation and calibration outputs cached, their MACs counted
    and their batch-1 times measured interleaved with the plain backbone's."""
    where = torch.device(device)
    cands = check_points(model, points)
    clock = time.perf_counter()
    train, val, _ = run_splits(cfg, data_dir)
    torch.manual_seed(cfg.seed)
    cand_net, cand_cfg = candidate_network(model, cfg.model, cands)
    cand_net.to(where)
    kmeans_init(cand_net, train, cfg.kmeans_images, cfg.seed, where)
    _train_candidates(cand_net, cfg, train, epochs, where)
    seconds = {"train_candidates": time.perf_counter() - clock}

    clock = time.perf_counter()
    cal_source = train if cfg.calibration_split == "train" else val
    if len(cal_source) > calibration_images:
        gen = torch.Generator().manual_seed(0)
        cal_source = cal_source.subset(torch.randperm(len(cal_source), generator=gen)[:calibration_images])
    cand_net.cpu()
    cpu = torch.device("cpu")
    val_cache, cal_cache = _cache(cand_net, val, cpu), _cache(cand_net, cal_source, cpu)
    units = fine_units(cand_net.stages)
    shapes = unit_shapes(units, cand_net.input_shape)
    unit_macs = _unit_macs(units, cand_net.input_shape)
    timing_x = next(iter(val.batches(max(1, timing_images), shuffle=False)))[0]
    head_macs, head_ms, backbone_ms = _head_costs(cand_net, timing_x, timing_rounds)
    seconds["cache_and_time_heads"] = time.perf_counter() - clock
    return Candidates(
        cfg, cand_net, cand_cfg, cands, units, shapes, train, val, val_cache, cal_cache,
        unit_macs, head_macs, head_ms, backbone_ms, seconds,
    )  # fmt: skip


def _unit_name(unit: nn.Module) -> str:
    """ "Conv2d+BatchNorm2d+ReLU" for a joined unit, the layer's type otherwise."""
    parts = list(unit.children()) if type(unit) is nn.Sequential else [unit]
    return "+".join(type(m).__name__ for m in parts)


def _alone_accuracy(cache: CachedOutputs, exits: BoFExits, index: int) -> float:
    logits = exits.classify(index, cache.histograms[index])
    return float((logits.argmax(1) == cache.labels).float().mean())
