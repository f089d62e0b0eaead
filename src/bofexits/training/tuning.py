"""Choose beta for a target on a validation split (never the test set), or say it cannot be met.

Targets: a maximum accuracy drop against the full network (`max_drop_pp`, in percentage
points, as `--max-drop`), a compute budget (fraction of the backbone's MACs), or a batch-1
latency budget (ms). The drop and the budget are chosen by `evaluation.points` (`knee_point`,
`at_compute`), so tuning and the report agree on the same split. Candidates are evaluated
offline from all exits' validation logits ("simulated from all exits", which the offline
evaluator's tests check against the real runtime), over a fine grid of beta values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bofexits.config import TrainConfig
from bofexits.data import ImageDataset
from bofexits.devices import describe_device, place_model, resolve_device
from bofexits.errors import ConfigError, TargetUnreachableError
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.frontier import beta_points, simulated_points  # beta_points re-exported
from bofexits.evaluation.grids import GRID_POINTS, beta_grid  # beta_grid re-exported: its home is grids
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import Point, at_compute, knee_point
from bofexits.evaluation.timing import interleaved_timing
from bofexits.inference.gpu import runtime_for
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.options import DEFAULT_VARIANT
from bofexits.policies.calibrated import ExitCalibration
from bofexits.policies.fixed import SingleExit
from bofexits.training.checkpoint import load_model
from bofexits.training.splits import run_splits

__all__ = [
    "TuneResult",
    "beta_grid",
    "beta_points",
    "exit_latencies_ms",
    "tune_beta",
    "tune_on_validation",
    "validation_split",
]


@dataclass
class TuneResult:
    """The chosen knob and what it achieved on the validation split.

    `device` is where `val_latency_ms` was measured ("cpu" or the GPU's name; None when no
    latency was measured): a latency budget holds only on that kind of device.
    """

    beta: float
    variant: str
    score: str
    target: str
    val_accuracy: float
    val_full_accuracy: float
    val_relative_macs: float
    val_latency_ms: float | None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tune_beta(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    *,
    variant: str = DEFAULT_VARIANT,
    max_drop_pp: float | None = None,
    budget: float | None = None,
    latency_ms: float | None = None,
    exit_latency_ms: Sequence[float] | None = None,
    points: int = GRID_POINTS,
) -> TuneResult:
    """Pick beta on validation outputs for exactly one target.

    The candidates are `Point`s made as a policy comparison makes them, and the choice is
    `evaluation.points`' own: `knee_point` for an accuracy drop (the report's knee, with
    `max_drop_pp / 100` for its tolerance), `at_compute` for a compute budget. On the same
    split and grid, `tune --max-drop 0.5` is the report's knee.

    Args:
        exit_logits: all S exits' logits on the validation split, [(N, classes)] * S.
        labels: (N,) validation labels.
        calibration: the rule's per-exit statistics.
        costs: per-exit MACs (to express compute relative to the backbone).
        variant: "mean", "quantile", "conditional" or "accuracy".
        max_drop_pp: largest accuracy drop allowed, in percentage points (0.5 = half a point;
            `evaluation.points.MAX_DROP` is the same tolerance as a fraction, 0.005): the
            cheapest beta wins.
        budget: largest mean MACs as a fraction of the backbone: the most accurate beta wins.
        latency_ms: largest mean batch-1 latency: the most accurate beta wins.
        exit_latency_ms: measured batch-1 latency of leaving at each exit (needed with latency_ms).
        points: how many betas of `beta_grid(variant, points)` are tried.

    Raises:
        TargetUnreachableError: no beta meets the target; the message names the closest point.
    """
    _check_target(max_drop_pp, budget, latency_ms, exit_latency_ms, len(exit_logits))
    full = accuracy(exit_logits[-1].argmax(1), labels)
    candidates, latencies = _candidates(
        exit_logits, labels, calibration, costs, variant, points, exit_latency_ms
    )
    chosen: Point | None
    if max_drop_pp is not None:
        chosen, target = knee_point(candidates, full, max_drop_pp / 100), f"max_drop={max_drop_pp}pp"
        if chosen is None:
            best = max(candidates, key=lambda p: p.accuracy)
            raise TargetUnreachableError(
                f"no beta keeps accuracy within {max_drop_pp} pp of the full network ({100 * full:.2f}%) on the "
                f"validation split; the closest is beta={best.value:g} at {100 * best.accuracy:.2f}%"
            )
    elif budget is not None:
        chosen, target = at_compute(candidates, budget), f"budget={budget}"
        if chosen is None:
            cheapest = min(candidates, key=lambda p: p.relative_macs)
            raise TargetUnreachableError(
                f"no beta stays within {100 * budget:.1f}% of the backbone's MACs; the cheapest is "
                f"beta={cheapest.value:g} at {100 * cheapest.relative_macs:.1f}% "
                f"({100 * cheapest.accuracy:.2f}% accuracy)"
            )
    else:
        assert latency_ms is not None and latencies is not None
        chosen, target = _within_latency(candidates, latencies, latency_ms), f"latency_ms={latency_ms}"
    assert chosen.value is not None and chosen.index is not None
    return TuneResult(
        chosen.value,
        variant,
        calibration.score,
        target,
        chosen.accuracy,
        full,
        chosen.relative_macs,
        latencies[chosen.index] if latencies is not None else None,
    )


def _check_target(
    max_drop_pp: float | None,
    budget: float | None,
    latency_ms: float | None,
    exit_latency_ms: Sequence[float] | None,
    num_exits: int,
) -> None:
    given = [t for t in (max_drop_pp, budget, latency_ms) if t is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one target: --max-drop PP, --budget FRACTION or --latency-ms MS")
    if latency_ms is not None and (exit_latency_ms is None or len(exit_latency_ms) != num_exits):
        raise ConfigError("a latency target needs the measured latency of leaving at each exit")
    target = given[0]
    if not math.isfinite(target) or target < 0:
        raise ConfigError(f"targets must be finite and non-negative, got {target}")
    if max_drop_pp is not None and max_drop_pp > 100:
        raise ConfigError(f"--max-drop is in percentage points (0..100), got {max_drop_pp}")
    if budget is not None and not 0 < budget <= 2:  # with its exits the whole network costs ~1.02
        raise ConfigError(
            f"--budget is a fraction of the backbone's MACs in (0, 2] (0.5 = half), got {budget}"
        )


def _candidates(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    variant: str,
    points: int,
    exit_latency_ms: Sequence[float] | None,
) -> tuple[list[Point], list[float] | None]:
    """`beta_points`, and with `exit_latency_ms` each point's mean batch-1 latency."""
    betas = beta_grid(variant, points)
    out, exits = simulated_points(exit_logits, labels, calibration, costs, variant, betas, indexed=True)
    if exit_latency_ms is None:
        return out, None
    lat = torch.tensor(exit_latency_ms, dtype=torch.float64)
    return out, [float(lat[e].mean()) for e in exits]


def _within_latency(candidates: Sequence[Point], latencies: Sequence[float], latency_ms: float) -> Point:
    """The most accurate point within a mean batch-1 latency (the cheaper on ties, as `at_compute`)."""
    ok = [p for p, t in zip(candidates, latencies, strict=True) if t <= latency_ms]
    if not ok:
        i = min(range(len(latencies)), key=latencies.__getitem__)
        raise TargetUnreachableError(
            f"no beta reaches a mean batch-1 latency of {latency_ms} ms; the fastest is "
            f"beta={candidates[i].value:g} at {latencies[i]:.3f} ms ({100 * candidates[i].accuracy:.2f}% accuracy)"
        )
    return max(ok, key=lambda p: (p.accuracy, -p.relative_macs))


def exit_latencies_ms(
    model: MultiExitNetwork,
    images: torch.Tensor,
    rounds: int = 3,
    *,
    device: torch.device | str | None = None,
) -> list[float]:
    """Measured batch-1 latency (ms, median of rounds) of leaving at each exit, on `images` (N, C, H, W).

    `device`: where to measure (the model and the images are moved there); None: where the model is.
    """
    device = place_model(model, device)
    base = runtime_for(model, SingleExit(0), check_inputs=False)
    images = images.to(device)
    out = []
    for e in range(model.num_exits):
        rt = base.with_policy(SingleExit(e))
        singles = [images[i : i + 1] for i in range(images.shape[0])]
        timing = interleaved_timing({"exit": rt.run_single}, singles, reference="exit", rounds=rounds)
        out.append(timing.median("exit") * 1e3)
    return out


def validation_split(cfg: TrainConfig, data_dir: str | None = None) -> ImageDataset:
    """The run's validation split, rebuilt as training made it (same seed and fraction).

    Knobs are chosen here and never on the test set, which training never sees either.
    """
    return run_splits(cfg, data_dir)[1]


def tune_on_validation(
    checkpoint: str | Path,
    *,
    variant: str | None = None,
    max_drop_pp: float | None = None,
    budget: float | None = None,
    latency_ms: float | None = None,
    data_dir: str | None = None,
    latency_images: int = 200,
    device: torch.device | str | None = None,
    points: int = GRID_POINTS,
) -> TuneResult:
    """Rebuild the run's validation split (same seed and fraction as training) and tune on it.

    `device` is where the network runs, and where a latency target is measured (None: the CPU,
    where the checkpoint loads); a GPU that is not there is refused before anything is read.
    """
    where = resolve_device(device) if device is not None else None
    model, calibrations, cfg = load_model(checkpoint)
    if cfg.score not in calibrations:
        raise ConfigError(f"{checkpoint} has no calibration (training did not finish); resume training first")
    val = validation_split(cfg, data_dir)
    where = place_model(model, where)
    logits, labels = collect_logits(model, val)
    lat = None
    if latency_ms is not None:
        x = next(
            val.subset(torch.arange(min(latency_images, len(val)))).batches(latency_images, shuffle=False)
        )[0]
        lat = exit_latencies_ms(model, x)
    result = tune_beta(
        logits,
        labels,
        calibrations[cfg.score],
        measure_costs(model),
        variant=variant or cfg.variant,
        max_drop_pp=max_drop_pp,
        budget=budget,
        latency_ms=latency_ms,
        exit_latency_ms=lat,
        points=points,
    )
    result.device = describe_device(where) if lat is not None else None
    return result
