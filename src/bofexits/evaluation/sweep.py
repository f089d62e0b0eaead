"""Sweep the proposed rule's knob on a trained network: real early exit at every point.

For each beta: accuracy, counted compute, exit fractions and balance from the real
runtime (batches shrink as samples exit), plus wall-clock at batch 1 and in batches
against the plain backbone, interleaved in the same run (`bofexits.evaluation.timed`).
The result is a `Sweep`, written as `results.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bofexits._io import write_json
from bofexits.data import ImageDataset
from bofexits.devices import place_model
from bofexits.evaluation.agreement import Mismatch, mismatch
from bofexits.evaluation.collect import collect_runtime_logits, run_adaptive, summarize
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.frontier import simulated_points
from bofexits.evaluation.grids import DEFAULT_BETAS
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import MAX_DROP, Point, PointTiming, knee_point
from bofexits.evaluation.schema import SCHEMA_VERSION, check_schema, from_fields, require, to_fields
from bofexits.evaluation.speedup import MAX_EFFICIENCY
from bofexits.evaluation.timed import TimingImages, TimingSummary, time_checked, timing_images
from bofexits.evaluation.timing import Platform, platform_info
from bofexits.inference.gpu import runtime_for
from bofexits.inference.offline import oracle, simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.options import DEFAULT_SCORE, DEFAULT_VARIANT
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration

__all__ = [
    "DEFAULT_BETAS",
    "Sweep",
    "SweepTiming",
    "TrainingInfo",
    "save_sweep",
    "sweep",
    "write_sweep_file",
]

log = logging.getLogger(__name__)

SIMULATED = "simulated from all exits' outputs"
_RERUN = "re-run `bofexits sweep` (or `bofexits demo`) to write it again"


@dataclass
class SweepTiming(TimingSummary):
    """`TimingSummary` of a sweep, with the check that batch-1 and batched inference agree.

    Attributes:
        batch1_paths_agree: every timed image took the same exit at batch 1 as in a batch.
    """

    batch1_paths_agree: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "batch1_paths_agree": self.batch1_paths_agree}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepTiming:
        base = cls._base_fields(data, "sweep timing")
        require(data, "sweep timing", "batch1_paths_agree")
        return cls(**base, batch1_paths_agree=data["batch1_paths_agree"])


@dataclass
class TrainingInfo:
    """How the swept network was trained (filled in by the demo; shown at the top of the report).

    Attributes:
        backbone: registered backbone name.
        epochs: epochs trained.
        mode: joint, frozen or two-phase.
        calibration_split: where the rule's statistics came from.
        seconds: training wall time.
        history: one record per epoch, as training wrote it.
    """

    backbone: str
    epochs: int
    mode: str
    calibration_split: str
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def phases(self) -> str:
        """Epochs per phase in training order, e.g. "10 backbone, 8 exits, 2 finetune" ("" without history)."""
        counts: dict[str, int] = {}
        for record in self.history:
            if isinstance(record.get("phase"), str):  # histories written before phases were recorded have none
                counts[record["phase"]] = counts.get(record["phase"], 0) + 1
        return ", ".join(f"{n} {p}" for p, n in counts.items())

    def to_dict(self) -> dict[str, Any]:
        return to_fields(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingInfo:
        return from_fields(cls, data, "training summary")


@dataclass
class Sweep:
    """The knob sweep of one calibrated rule on the test set.

    Attributes:
        score, variant: the rule swept (real early exit, timed).
        num_test: test images.
        platform: where it ran.
        costs: per-part MACs and parameters.
        per_exit_accuracy: (S,) accuracy of each exit alone; the last is the full network.
        oracle: the earliest correct exit for every sample.
        points: one per beta, real early exit; `timing` set when timed.
        comparisons: "score/variant" -> points of other configurations, simulated.
        simulation_matches_runtime: the simulation took the runtime's exit for every test
            image at every beta of `points`.
        simulation_mismatches: where it did not: per beta, the images and how close to its
            threshold the deciding score was (`bofexits.evaluation.agreement.Mismatch`).
        timing: how the points were timed (None: not timed).
        dataset: dataset name, when known.
        training: how the network was trained, when known.
        comparisons_source: where `comparisons` come from.
    """

    score: str
    variant: str
    num_test: int
    platform: Platform
    costs: CostTable
    per_exit_accuracy: list[float]
    oracle: Point
    points: list[Point]
    comparisons: dict[str, list[Point]]
    simulation_matches_runtime: bool
    simulation_mismatches: list[Mismatch] = field(default_factory=list)
    timing: SweepTiming | None = None
    dataset: str | None = None
    training: TrainingInfo | None = None
    comparisons_source: str = SIMULATED
    schema_version: int = SCHEMA_VERSION

    @property
    def full_accuracy(self) -> float:
        """The final exit's accuracy: the full network."""
        return self.per_exit_accuracy[-1]

    def knee(self, max_drop: float = MAX_DROP) -> Point | None:
        """The cheapest beta within `max_drop` of the full network."""
        return knee_point(self.points, self.full_accuracy, max_drop)

    def to_dict(self) -> dict[str, Any]:
        """`results.json`: points without their timing, which goes to `timing.per_beta`."""
        out: dict[str, Any] = {
            "score": self.score,
            "variant": self.variant,
            "num_test": self.num_test,
            "platform": self.platform.to_dict(),
            "costs": self.costs.to_dict(),
            "per_exit_accuracy": list(self.per_exit_accuracy),
            "full_accuracy": self.full_accuracy,
            "oracle": self.oracle.to_dict(),
            "points": [{k: v for k, v in p.to_dict().items() if k != "timing"} for p in self.points],
            "comparisons": {k: [p.to_dict() for p in pts] for k, pts in self.comparisons.items()},
            "comparisons_source": self.comparisons_source,
            "simulation_matches_runtime": self.simulation_matches_runtime,
            "simulation_mismatches": [m.to_dict() for m in self.simulation_mismatches],
        }
        if self.timing is not None:
            per_beta = [
                {"beta": p.value, "relative_macs": p.relative_macs, **p.timing.to_dict()}
                for p in self.points
                if p.timing is not None
            ]
            out["timing"] = {**self.timing.to_dict(), "per_beta": per_beta}
        if self.dataset is not None:
            out["dataset"] = self.dataset
        if self.training is not None:
            out["training"] = self.training.to_dict()
        out["schema_version"] = self.schema_version
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        check_schema(data, "sweep (results.json)", _RERUN)
        require(data, "sweep", "score", "variant", "num_test", "platform", "costs", "per_exit_accuracy")
        require(data, "sweep", "oracle", "points", "comparisons", "simulation_matches_runtime")
        points = [Point.from_dict(p) for p in data["points"]]
        timing = data.get("timing")
        if timing is not None:
            per_beta = {t["beta"]: PointTiming.from_dict(t) for t in timing.get("per_beta", [])}
            for p in points:
                p.timing = per_beta.get(p.value)
        training = data.get("training")
        return cls(
            score=data["score"],
            variant=data["variant"],
            num_test=data["num_test"],
            platform=Platform.from_dict(data["platform"]),
            costs=CostTable.from_dict(data["costs"]),
            per_exit_accuracy=list(data["per_exit_accuracy"]),
            oracle=Point.from_dict(data["oracle"]),
            points=points,
            comparisons={k: [Point.from_dict(p) for p in v] for k, v in data["comparisons"].items()},
            simulation_matches_runtime=data["simulation_matches_runtime"],
            simulation_mismatches=[Mismatch.from_dict(m) for m in data.get("simulation_mismatches", [])],
            timing=None if timing is None else SweepTiming.from_dict(timing),
            dataset=data.get("dataset"),
            training=None if training is None else TrainingInfo.from_dict(training),
            comparisons_source=data.get("comparisons_source", SIMULATED),
        )


def write_sweep_file(result: Sweep, folder: str | Path) -> Path:
    """Write `results.json` into `folder` (atomically); returns its path."""
    path = Path(folder) / "results.json"
    write_json(path, result.to_dict())
    return path


def save_sweep(result: Sweep, out_dir: str | Path) -> Path:
    """Write `results.json` into `out_dir` as a one-file set (`bofexits._outputs.output_set`, which
    records it among the folder's members); returns its path. `bofexits.reporting.write_results`
    writes it together with the report."""
    from bofexits._outputs import output_set

    with output_set(out_dir, "sweep") as stage:
        write_sweep_file(result, stage)
    return Path(out_dir) / "results.json"


def sweep(
    model: MultiExitNetwork,
    calibrations: dict[str, ExitCalibration],
    test: ImageDataset,
    *,
    score: str = DEFAULT_SCORE,
    variant: str = DEFAULT_VARIANT,
    betas: Sequence[float] | None = None,
    extra: Sequence[tuple[str, str]] = (),
    timing_samples: int = 500,
    timing_rounds: int = 5,
    throughput_batch: int = 256,
    throughput_batches: int = 8,
    device: torch.device | str | None = None,
    max_efficiency: float = MAX_EFFICIENCY,
) -> Sweep:
    """Evaluate the calibrated rule at every beta with real early exit, and time it.

    Args:
        model: trained network (eval mode).
        calibrations: per-score statistics stored at training time.
        test: evaluation data (never used for calibration).
        score, variant: the configuration that is timed and reported as the headline (default
            `DEFAULT_SCORE` / `DEFAULT_VARIANT`, the CLI's and the config's: the accuracy rule on max_prob).
        betas: knob values (default `DEFAULT_BETAS[variant]`).
        extra: other (score, variant) pairs to evaluate for accuracy/compute only.
        timing_samples: images timed one by one at batch 1 (0 disables timing).
        timing_rounds: interleaved rounds.
        throughput_batch, throughput_batches: batched timing over this many batches of this size.
        device: where the network runs and is timed (`bofexits.devices.resolve_device` names; the
            model is moved there); None: where the model is. Results are kept on the CPU.
        max_efficiency: a timing whose efficiency exceeds this is measured again, then refused
            (`bofexits.evaluation.timed.time_checked`).
    """
    device = place_model(model, device)
    model.eval()
    costs = measure_costs(model)
    betas = list(betas) if betas is not None else DEFAULT_BETAS[variant]
    policies = [CalibratedThreshold(calibrations[score], b, variant) for b in betas]
    runtime = runtime_for(model, policies[0])
    # Every exit's outputs as the runtime computes them: the simulation then replays its arithmetic.
    all_logits, labels = collect_runtime_logits(runtime, test)
    best = oracle(all_logits, labels)
    points, real_exits = _points(runtime, policies, test, costs)
    # The headline points come from real early exit; the comparisons are simulated from all
    # exits' outputs, which is exact when the simulation agrees with the runtime (checked here).
    found = [
        mismatch(pol, real, simulate(pol, all_logits).exit_index, all_logits)
        for pol, real in zip(policies, real_exits, strict=True)
    ]
    mismatches = [m for m in found if m is not None]
    result = Sweep(
        score=score,
        variant=variant,
        num_test=len(test),
        platform=platform_info(),
        costs=costs,
        per_exit_accuracy=[accuracy(lg.argmax(1), labels) for lg in all_logits],
        oracle=summarize(best.predictions, best.exit_index, labels, costs),
        points=points,
        comparisons={
            f"{s}/{v}": simulated_points(all_logits, labels, calibrations[s], costs, v, DEFAULT_BETAS[v])[0]
            for s, v in extra
        },
        simulation_matches_runtime=not mismatches,
        simulation_mismatches=mismatches,
    )
    if timing_samples > 0:
        images = timing_images(test, timing_samples, throughput_batch, throughput_batches, device=device)
        result.timing = _time(
            model, calibrations[score], variant, betas, points, images, timing_rounds, max_efficiency
        )
    return result


def _points(
    runtime: AdaptiveRuntime, policies: Sequence[CalibratedThreshold], test: ImageDataset, costs: CostTable
) -> tuple[list[Point], list[torch.Tensor]]:
    """Real early exit at each beta: summaries and the exit each test sample took."""
    out, exits = [], []
    for policy in policies:
        result, labels = run_adaptive(runtime.with_policy(policy), test)
        point = summarize(
            result.predictions, result.exit_index, labels, costs, knob="beta", value=policy.beta
        )
        point.thresholds = list(policy.thresholds)
        out.append(point)
        exits.append(result.exit_index)
    return out, exits


def _time(
    model: MultiExitNetwork,
    cal: ExitCalibration,
    variant: str,
    betas: Sequence[float],
    points: list[Point],
    images: TimingImages,
    rounds: int,
    max_efficiency: float,
) -> SweepTiming:
    """Time every point against the plain backbone (sets each point's `timing`)."""
    base = runtime_for(model, CalibratedThreshold(cal, 0.0, variant), check_inputs=False)
    runtimes = {str(i): base.with_policy(CalibratedThreshold(cal, b, variant)) for i, b in enumerate(betas)}
    relative = {str(i): p.relative_macs for i, p in enumerate(points)}
    timed, refused = time_checked(
        base.plain, runtimes, images, rounds, relative, max_efficiency=max_efficiency
    )
    for i, p in enumerate(points):
        p.timing = None if str(i) in refused else timed.point(str(i))
    log.info(
        "timed %d single images and %d batched images, %d rounds",
        len(images.singles),
        images.batched_samples,
        rounds,
    )
    refused = {f"beta {points[int(k)].value:g}": why for k, why in refused.items()}
    agree = _paths_agree(runtimes.values(), images)
    return SweepTiming.of([timed], images, rounds, batch1_paths_agree=agree, refused=refused)


def _paths_agree(runtimes: Iterable[AdaptiveRuntime], images: TimingImages) -> bool:
    """Whether batch-1 inference takes the batched path's exit on every timed image."""
    if not images.singles:
        return True
    x = torch.cat(images.singles)
    agree = True
    for rt in runtimes:
        single = torch.tensor([rt.run_single(s)[1] for s in images.singles])
        agree &= bool(torch.equal(rt.run_batched(x).exit_index.cpu(), single))
    return agree
