"""Exit policies side by side on one trained network: every policy over its knob's range.

Accuracy, compute, exit fractions and balance come from the offline simulation (all exits'
outputs computed once, replayed through the runtime's own loop: "simulated from all exits").
A subset of points per policy (evenly spread, plus the knee and the matched-compute points)
is then run for real: timed at batch 1 and in batches against the plain backbone in the same
run (`bofexits.evaluation.timed`), and its exits and predictions checked against the
simulation on the same images. Knob grids and the budgeted baseline's thresholds come from
the validation split only. At each matched-compute level and at the knee, the proposed rule's
point and the best baseline's are simulated once more to get which test images each gets right,
and their difference in accuracy gets a paired bootstrap interval (`Contrast`). The result is a
`Comparison`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence

import torch

from bofexits.data import ImageDataset
from bofexits.devices import place_model
from bofexits.evaluation.collect import RUNTIME_BATCH, collect_runtime_logits, summarize
from bofexits.evaluation.comparison import (
    BASELINES,
    Comparison,
    ComparisonTiming,
    Contrast,
    DecisionOverhead,
    FamilyResult,
    RuntimeCheck,
)
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.families import Family, policy_families
from bofexits.evaluation.grids import GRID_POINTS
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import LEVELS, MAX_DROP, Point, at_levels, cheapest_reaching, knee_point
from bofexits.evaluation.significance import paired_bootstrap
from bofexits.evaluation.speedup import MAX_EFFICIENCY, SpeedInterval
from bofexits.evaluation.timed import TimedRuns, TimingImages, time_checked, timing_images
from bofexits.evaluation.timing import platform_info
from bofexits.inference.gpu import runtime_for
from bofexits.inference.offline import oracle, oracle_frontier, simulate
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.options import DEFAULT_SCORE, DEFAULT_VARIANT
from bofexits.policies import ExitCalibration, ExitPolicy, SingleExit

__all__ = ["compare_policies", "decision_overhead_us"]

log = logging.getLogger(__name__)

_FRONTIER_POINTS = 400  # the oracle frontier is thinned to about this many points for JSON and plots


def compare_policies(
    model: MultiExitNetwork,
    calibrations: dict[str, ExitCalibration],
    val: ImageDataset,
    test: ImageDataset,
    *,
    score: str = DEFAULT_SCORE,
    variant: str = DEFAULT_VARIANT,
    points: int = GRID_POINTS,
    timed_points: int = 9,
    timing_samples: int = 500,
    timing_rounds: int = 3,
    max_efficiency: float = MAX_EFFICIENCY,
    throughput_batch: int = 256,
    throughput_batches: int = 4,
    device: torch.device | str | None = None,
) -> Comparison:
    """Every policy over its knob on `test`, with real-runtime checks and timing of chosen points.

    Args:
        model: trained network.
        calibrations: the checkpoint's calibration statistics.
        val: validation split (knob grids, budgeted thresholds); never the test set.
        test: evaluation data.
        score, variant: the proposed rule's configuration.
        points: knob values per threshold policy (simulated).
        timed_points: evenly spread points per timed policy run for real (plus knee and matched
            ones); 0 runs and times every point.
        timing_samples: images timed one by one (0: no timing and no real-runtime check).
        timing_rounds: interleaved rounds.
        max_efficiency: a timing whose efficiency exceeds this is measured again, then refused
            (`bofexits.evaluation.timed.time_checked`).
        throughput_batch, throughput_batches: batched timing over this many batches of this size.
        device: where the network runs and is timed (`bofexits.devices.resolve_device` names; the
            model is moved there); None: where the model is. Results are kept on the CPU.
    """
    device = place_model(model, device)
    model.eval()
    costs = measure_costs(model)
    # The runtime's own arithmetic, so that the simulated points replay its decisions exactly.
    runtime = runtime_for(model, SingleExit(0), check_inputs=False)
    val_logits, _ = collect_runtime_logits(runtime, val)
    test_logits, labels = collect_runtime_logits(runtime, test)
    full_acc = accuracy(test_logits[-1].argmax(1), labels)
    families = policy_families(calibrations, val_logits, costs, score=score, variant=variant, points=points)
    results = [_simulate_family(fam, test_logits, labels, costs, full_acc) for fam in families]
    log.info("simulated %d policy points", sum(len(r.points) for r in results))
    best = oracle(test_logits, labels)
    comparison = Comparison(
        num_test=len(test),
        num_val=len(val),
        platform=platform_info(),
        costs=costs,
        full_accuracy=full_acc,
        oracle=summarize(best.predictions, best.exit_index, labels, costs),
        frontier=_frontier(test_logits, labels, costs),
        families=results,
        exit_confidence_medians=[float(q) for q in calibrations["max_prob"].quantiles[:, 500]]
        if "max_prob" in calibrations
        else None,
    )
    comparison.contrasts = _contrasts(comparison, families, test_logits, labels)
    if timing_samples > 0:
        knee = comparison.proposed.knee
        images = timing_images(test, timing_samples, throughput_batch, throughput_batches, device=device)
        comparison.timing = _time_families(
            model,
            families,
            results,
            test_logits,
            knee.accuracy if knee else full_acc - MAX_DROP,
            timed_points,
            images,
            timing_rounds,
            max_efficiency,
        )
        comparison.decision_overhead = _overheads(
            families, results, test_logits, comparison.timing.backbone_batch1_ms
        )
    return comparison


def _frontier(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, costs: CostTable
) -> list[tuple[float, float]]:
    """The oracle frontier as (relative MACs, accuracy), thinned, its last point kept."""
    f_macs, f_acc = oracle_frontier(logits, labels, costs.macs_at_exit())
    step = max(1, f_macs.numel() // _FRONTIER_POINTS)
    pairs = zip(f_macs[::step].tolist(), f_acc[::step].tolist(), strict=True)
    out = [(m / costs.backbone_macs, a) for m, a in pairs]
    return [*out, (float(f_macs[-1]) / costs.backbone_macs, float(f_acc[-1]))]


def _simulate_family(
    fam: Family, logits: Sequence[torch.Tensor], labels: torch.Tensor, costs: CostTable, full_accuracy: float
) -> FamilyResult:
    """Every knob value of one policy, simulated; with its knee and matched-compute points."""
    pts = []
    for i, v in enumerate(fam.values):
        r = simulate(fam.make(v), logits)
        pts.append(summarize(r.predictions, r.exit_index, labels, costs, knob=fam.knob, value=v, index=i))
    return FamilyResult(
        fam.name,
        fam.label,
        fam.knob,
        fam.proposed,
        fam.timed,
        pts,
        knee_point(pts, full_accuracy, MAX_DROP),
        at_levels(pts, LEVELS),
    )


def _contrasts(
    comparison: Comparison, families: Sequence[Family], logits: Sequence[torch.Tensor], labels: torch.Tensor
) -> list[Contrast]:
    """The proposed rule against the best of `BASELINES` at each level and at the knee, with the
    paired bootstrap interval over the test images (the chosen points simulated once more)."""
    by_name = {f.name: f for f in families}
    cache: dict[tuple[str, int], torch.Tensor] = {}

    def correct(name: str, index: int) -> torch.Tensor:  # (N,) bool: right on that test image
        if (name, index) not in cache:
            fam = by_name[name]
            cache[name, index] = simulate(fam.make(fam.values[index]), logits).predictions.cpu() == labels
        return cache[name, index]

    prop = comparison.proposed
    targets = [(lv, False, p) for lv, p in prop.at_levels.items()]
    if prop.knee is not None:
        targets.append((prop.knee.relative_macs, True, prop.knee))
    out = []
    for level, at_knee, p in targets:
        best = comparison.best_baseline(level, BASELINES)
        if p is None or p.index is None or best is None or (j := best[1].index) is None:
            continue
        interval = paired_bootstrap(correct(prop.name, p.index).numpy(), correct(best[0], j).numpy())
        out.append(Contrast(level, at_knee, best[0], p.index, j, interval))
    return out


def _picks(result: FamilyResult, knee_accuracy: float, spread: int) -> list[int]:
    """Indices to run for real: `spread` evenly spaced ones plus the knee, the cheapest point
    reaching the proposed rule's knee accuracy and the matched-compute points (spread 0: all)."""
    n = len(result.points)
    if spread <= 0:
        return list(range(n))
    idx = {round(i * (n - 1) / max(spread - 1, 1)) for i in range(min(spread, n))}
    named = [result.knee, cheapest_reaching(result.points, knee_accuracy), *result.at_levels.values()]
    idx |= {p.index for p in named if p is not None and p.index is not None}
    return sorted(idx)


def _check_runtimes(
    runtimes: Iterable[AdaptiveRuntime], x: torch.Tensor, logits: Sequence[torch.Tensor], check: RuntimeCheck
) -> None:
    """Run each runtime for real on `x` and count where it differs from the simulation (into `check`)."""
    for rt in runtimes:
        # In the batches the simulated logits were computed in, so both round alike.
        parts = [rt.run_batched(chunk) for chunk in x.split(RUNTIME_BATCH)]
        real = ExitResult(torch.cat([r.logits for r in parts]), torch.cat([r.exit_index for r in parts]))
        sim = simulate(rt.policy, logits)
        check.points += 1
        check.mismatched_exits += int((real.exit_index.cpu() != sim.exit_index).sum())
        check.mismatched_predictions += int((real.predictions.cpu() != sim.predictions).sum())


def _time_families(
    model: MultiExitNetwork,
    families: list[Family],
    results: list[FamilyResult],
    test_logits: Sequence[torch.Tensor],
    knee_accuracy: float,
    spread: int,
    images: TimingImages,
    rounds: int,
    max_efficiency: float,
) -> ComparisonTiming:
    """Run chosen points for real and check their exits against the simulation; time every policy's
    points against the plain backbone in the same interleaved rounds on the same images, so that two
    rules' speeds are a paired contrast (sets the chosen points' `timing`)."""
    x_big = torch.cat(images.batches)
    sim_logits = [lg[: x_big.shape[0]] for lg in test_logits]
    base = runtime_for(model, SingleExit(0), check_inputs=False)
    check = RuntimeCheck(images_per_point=int(x_big.shape[0]))
    runtimes: dict[str, AdaptiveRuntime] = {}
    where: dict[str, Point] = {}
    for fam, result in zip(families, results, strict=True):
        if not fam.timed:
            continue
        for i in _picks(result, knee_accuracy, spread):
            runtimes[f"{fam.name}/{i}"] = base.with_policy(fam.make(fam.values[i]))
            where[f"{fam.name}/{i}"] = result.points[i]
    _check_runtimes(runtimes.values(), x_big, sim_logits, check)
    relative = {name: p.relative_macs for name, p in where.items()}
    timed, refused = time_checked(
        base.plain, runtimes, images, rounds, relative, max_efficiency=max_efficiency
    )
    for name, point in where.items():
        point.timing = None if name in refused else timed.point(name)
    log.info("timed %d points of every timed policy in the same rounds", len(runtimes))
    return ComparisonTiming.of(
        [timed],
        images,
        rounds,
        runtime_check=check,
        refused=refused,
        speed_contrasts=_speed_contrasts(results, timed, knee_accuracy),
    )


def _speed_contrasts(
    results: Sequence[FamilyResult], timed: TimedRuns, knee_accuracy: float
) -> dict[str, SpeedInterval]:
    """Baseline name -> how many times faster the proposed knee ran at batch 1 than that baseline's
    cheapest point reaching the knee's accuracy (both timed in the same rounds; a ratio of times).

    A point keeps a timing only when it ran in these rounds and was not refused, so that is the test.
    """
    proposed = next((r for r in results if r.proposed), None)
    knee = proposed.knee if proposed is not None else None
    if proposed is None or knee is None or knee.timing is None:
        return {}
    out = {}
    for result in results:
        other = None if result.proposed else cheapest_reaching(result.points, knee_accuracy)
        if other is not None and other.timing is not None:
            out[result.name] = timed.faster(f"{result.name}/{other.index}", f"{proposed.name}/{knee.index}")
    return out


def decision_overhead_us(
    policy: ExitPolicy, exit_logits: Sequence[torch.Tensor], samples: int = 300
) -> float:
    """Mean µs of one batch-1 `stop_one` decision (the policy alone, not the exit layer).

    Every sample is asked at every early exit (state carried as in the runtime), on real
    exit outputs, so the cost of reading the score and comparing is what is measured.
    """
    n = min(samples, exit_logits[0].shape[0])
    rows = [[lg[j : j + 1] for lg in exit_logits[:-1]] for j in range(n)]
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for row in rows:
            state = policy.begin(1)
            for i, lg in enumerate(row):
                _, state = policy.stop_one(i, lg, state)
        best = min(best, time.perf_counter() - t0)
    return best / (n * len(exit_logits[:-1])) * 1e6


def _overheads(
    families: list[Family],
    results: list[FamilyResult],
    test_logits: Sequence[torch.Tensor],
    backbone_batch1_ms: float,
) -> list[DecisionOverhead]:
    """Per-decision cost of each timed policy at its knee (or middle point), vs the backbone."""
    rows = []
    for fam, result in zip(families, results, strict=True):
        if not fam.timed or fam.name == "single-exit":
            continue
        point = result.knee or result.points[len(result.points) // 2]
        us = decision_overhead_us(fam.make(fam.values[point.index or 0]), test_logits)
        rows.append(DecisionOverhead(fam.name, us, us / 1e3 / backbone_batch1_ms))
    return rows
