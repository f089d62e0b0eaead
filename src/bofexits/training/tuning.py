"""Choose beta for a target on a validation split (never the test set), or say it cannot be met.

Targets: a maximum accuracy drop against the full network (pp), a compute budget (fraction
of the backbone's MACs), or a batch-1 latency budget (ms). Candidates are evaluated
offline from all exits' validation logits ("simulated from all exits", which the offline
evaluator's tests check against the real runtime), over a fine grid of beta values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from bofexits.config import TrainConfig
from bofexits.data import ImageDataset
from bofexits.devices import describe_device, place_model, resolve_device
from bofexits.errors import ConfigError, TargetUnreachableError
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.grids import beta_grid  # re-exported: its home is evaluation.grids
from bofexits.evaluation.metrics import accuracy, relative_compute
from bofexits.evaluation.timing import interleaved_timing
from bofexits.inference.gpu import runtime_for
from bofexits.inference.offline import simulate
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration
from bofexits.policies.fixed import SingleExit
from bofexits.training.checkpoint import load_model
from bofexits.training.splits import run_splits

__all__ = [
    "TuneResult",
    "beta_grid",
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


class _Point(NamedTuple):
    """One candidate knob on the validation split."""

    beta: float
    accuracy: float
    relative_macs: float
    latency_ms: float | None


def tune_beta(
    exit_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    calibration: ExitCalibration,
    costs: CostTable,
    *,
    variant: str = "mean",
    max_drop: float | None = None,
    budget: float | None = None,
    latency_ms: float | None = None,
    exit_latency_ms: Sequence[float] | None = None,
) -> TuneResult:
    """Pick beta on validation outputs for exactly one target.

    Args:
        exit_logits: all S exits' logits on the validation split, [(N, classes)] * S.
        labels: (N,) validation labels.
        calibration: the rule's per-exit statistics.
        costs: per-exit MACs (to express compute relative to the backbone).
        variant: "mean", "quantile", "conditional" or "accuracy".
        max_drop: largest accuracy drop allowed, in percentage points: the cheapest beta wins.
        budget: largest mean MACs as a fraction of the backbone: the most accurate beta wins.
        latency_ms: largest mean batch-1 latency: the most accurate beta wins.
        exit_latency_ms: measured batch-1 latency of leaving at each exit (needed with latency_ms).

    Raises:
        TargetUnreachableError: no beta meets the target; the message names the closest point.
    """
    _check_target(max_drop, budget, latency_ms, exit_latency_ms, len(exit_logits))
    full = accuracy(exit_logits[-1].argmax(1), labels)
    points = _candidates(exit_logits, labels, calibration, costs, variant, exit_latency_ms)
    if max_drop is not None:
        chosen, target = _within_drop(points, full, max_drop), f"max_drop={max_drop}pp"
    elif budget is not None:
        chosen, target = _within_budget(points, budget), f"budget={budget}"
    else:
        assert latency_ms is not None
        chosen, target = _within_latency(points, latency_ms), f"latency_ms={latency_ms}"
    return TuneResult(
        chosen.beta,
        variant,
        calibration.score,
        target,
        chosen.accuracy,
        full,
        chosen.relative_macs,
        chosen.latency_ms,
    )


def _check_target(
    max_drop: float | None,
    budget: float | None,
    latency_ms: float | None,
    exit_latency_ms: Sequence[float] | None,
    num_exits: int,
) -> None:
    given = [t for t in (max_drop, budget, latency_ms) if t is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one target: --max-drop PP, --budget FRACTION or --latency-ms MS")
    if latency_ms is not None and (exit_latency_ms is None or len(exit_latency_ms) != num_exits):
        raise ConfigError("a latency target needs the measured latency of leaving at each exit")
    target = given[0]
    if not math.isfinite(target) or target < 0:
        raise ConfigError(f"targets must be finite and non-negative, got {target}")
    if max_drop is not None and max_drop > 100:
        raise ConfigError(f"--max-drop is in percentage points (0..100), got {max_drop}")
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
    exit_latency_ms: Sequence[float] | None,
) -> list[_Point]:
    """Every beta of the grid, simulated from all exits' outputs."""
    lat = torch.tensor(exit_latency_ms, dtype=torch.float64) if exit_latency_ms is not None else None
    points = []
    for beta in beta_grid(variant):
        r = simulate(CalibratedThreshold(calibration, beta, variant), list(exit_logits))
        points.append(
            _Point(
                beta,
                accuracy(r.predictions, labels),
                relative_compute(costs.macs_for(r.exit_index), costs.backbone_macs),
                float(lat[r.exit_index].mean()) if lat is not None else None,
            )
        )
    return points


def _within_drop(points: list[_Point], full: float, max_drop: float) -> _Point:
    """The cheapest point within `max_drop` pp of the full network (the more accurate on ties)."""
    ok = [p for p in points if p.accuracy >= full - max_drop / 100 - 1e-12]
    if not ok:
        best = max(points, key=lambda p: p.accuracy)
        raise TargetUnreachableError(
            f"no beta keeps accuracy within {max_drop} pp of the full network ({100 * full:.2f}%) on the "
            f"validation split; the closest is beta={best.beta:g} at {100 * best.accuracy:.2f}%"
        )
    return min(ok, key=lambda p: (p.relative_macs, -p.accuracy))


def _within_budget(points: list[_Point], budget: float) -> _Point:
    """The most accurate point within `budget` of the backbone's MACs (the cheaper on ties)."""
    ok = [p for p in points if p.relative_macs <= budget + 1e-12]
    if not ok:
        cheapest = min(points, key=lambda p: p.relative_macs)
        raise TargetUnreachableError(
            f"no beta stays within {100 * budget:.1f}% of the backbone's MACs; the cheapest is "
            f"beta={cheapest.beta:g} at {100 * cheapest.relative_macs:.1f}% "
            f"({100 * cheapest.accuracy:.2f}% accuracy)"
        )
    return max(ok, key=lambda p: (p.accuracy, -p.relative_macs))


def _within_latency(points: list[_Point], latency_ms: float) -> _Point:
    """The most accurate point within a mean batch-1 latency (the cheaper on ties)."""
    ok = [p for p in points if p.latency_ms is not None and p.latency_ms <= latency_ms]
    if not ok:
        fastest = min(points, key=lambda p: p.latency_ms if p.latency_ms is not None else float("inf"))
        raise TargetUnreachableError(
            f"no beta reaches a mean batch-1 latency of {latency_ms} ms; the fastest is beta={fastest.beta:g} "
            f"at {fastest.latency_ms:.3f} ms ({100 * fastest.accuracy:.2f}% accuracy)"
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
    max_drop: float | None = None,
    budget: float | None = None,
    latency_ms: float | None = None,
    data_dir: str | None = None,
    latency_images: int = 200,
    device: torch.device | str | None = None,
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
        max_drop=max_drop,
        budget=budget,
        latency_ms=latency_ms,
        exit_latency_ms=lat,
    )
    result.device = describe_device(where) if lat is not None else None
    return result
