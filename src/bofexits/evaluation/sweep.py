"""Sweep the proposed rule's knob on a trained network: real early exit at every point.

For each beta: accuracy, counted compute, exit fractions and balance from the real
runtime (batches shrink as samples exit), plus wall-clock at batch 1 and in batches
against the plain backbone, interleaved in the same run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bofexits.data import ImageDataset
from bofexits.evaluation.collect import collect_logits, run_adaptive, summarize
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.timing import interleaved_timing, platform_info
from bofexits.inference.offline import oracle, simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration

__all__ = ["DEFAULT_BETAS", "knee_point", "sweep"]

DEFAULT_BETAS: dict[str, list[float]] = {
    "mean": [0.5, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0],
    "quantile": [0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    # Denser near the knee (about 0.45-0.5 on the demo network), where the choice is made.
    "conditional": [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.425, 0.45, 0.475, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0],
}
log = logging.getLogger(__name__)


def knee_point(
    points: Sequence[dict[str, Any]], full_accuracy: float, max_drop: float = 0.005
) -> dict[str, Any] | None:
    """Cheapest point whose accuracy is within `max_drop` of the full network (None if none is)."""
    ok = [p for p in points if p["accuracy"] >= full_accuracy - max_drop - 1e-12]
    return min(ok, key=lambda p: p["relative_macs"]) if ok else None


def sweep(
    model: MultiExitNetwork,
    calibrations: dict[str, ExitCalibration],
    test: ImageDataset,
    *,
    score: str = "max_logit",
    variant: str = "mean",
    betas: Sequence[float] | None = None,
    extra: Sequence[tuple[str, str]] = (),
    timing_samples: int = 500,
    timing_rounds: int = 5,
    throughput_batch: int = 256,
) -> dict[str, Any]:
    """Evaluate the calibrated rule at every beta with real early exit, and time it.

    Args:
        model: trained network (eval mode).
        calibrations: per-score statistics stored at training time.
        test: evaluation data (never used for calibration).
        score, variant: the configuration that is timed and reported as the headline.
        betas: knob values (default `DEFAULT_BETAS[variant]`).
        extra: other (score, variant) pairs to evaluate for accuracy/compute only.
        timing_samples: images timed one by one at batch 1 (0 disables timing).
        timing_rounds: interleaved rounds.
        throughput_batch: batch size of the batched throughput measurement.
    """
    model.eval()
    costs = measure_costs(model)
    betas = list(betas) if betas is not None else DEFAULT_BETAS[variant]
    all_logits, labels = collect_logits(model, test)
    per_exit = [accuracy(lg.argmax(1), labels) for lg in all_logits]
    best = oracle(all_logits, labels)
    oracle_summary = summarize(best.predictions, best.exit_index, labels, costs)

    points, real_exits = _points(model, calibrations[score], test, costs, variant, betas)
    # The headline points come from real early exit; the comparisons are simulated from all
    # exits' outputs, which is exact when the simulation agrees with the runtime (checked here).
    simulated = [
        simulate(CalibratedThreshold(calibrations[score], b, variant), all_logits).exit_index for b in betas
    ]
    offline_agrees = all(torch.equal(a, b) for a, b in zip(real_exits, simulated, strict=True))
    comparisons = {
        f"{s}/{v}": _simulated_points(all_logits, labels, calibrations[s], costs, v, DEFAULT_BETAS[v])
        for s, v in extra
    }
    result: dict[str, Any] = {
        "score": score,
        "variant": variant,
        "num_test": len(test),
        "platform": platform_info(),
        "costs": costs.to_dict(),
        "per_exit_accuracy": per_exit,
        "full_accuracy": per_exit[-1],
        "oracle": oracle_summary,
        "points": points,
        "comparisons": comparisons,
        "comparisons_source": "simulated from all exits' outputs",
        "simulation_matches_runtime": offline_agrees,
    }
    if timing_samples > 0:
        result["timing"] = _time(
            model,
            calibrations[score],
            test,
            variant,
            betas,
            points,
            timing_samples,
            timing_rounds,
            throughput_batch,
        )
    return result


def _points(
    model: MultiExitNetwork,
    cal: ExitCalibration,
    test: ImageDataset,
    costs: CostTable,
    variant: str,
    betas: Sequence[float],
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """Real early exit at each beta: summaries and the exit each test sample took."""
    out, exits = [], []
    runtime = AdaptiveRuntime(model, CalibratedThreshold(cal, betas[0], variant))
    for beta in betas:
        policy = CalibratedThreshold(cal, beta, variant)
        result, labels = run_adaptive(runtime.with_policy(policy), test)
        summary = summarize(result.predictions, result.exit_index, labels, costs)
        out.append({"beta": beta, **summary, "thresholds": policy.thresholds})
        exits.append(result.exit_index)
    return out, exits


def _simulated_points(
    all_logits: list[torch.Tensor],
    labels: torch.Tensor,
    cal: ExitCalibration,
    costs: CostTable,
    variant: str,
    betas: Sequence[float],
) -> list[dict[str, Any]]:
    out = []
    for beta in betas:
        r = simulate(CalibratedThreshold(cal, beta, variant), all_logits)
        out.append({"beta": beta, **summarize(r.predictions, r.exit_index, labels, costs)})
    return out


def _single(runtime: AdaptiveRuntime) -> Callable[[torch.Tensor], object]:
    def run(x: torch.Tensor) -> object:
        return runtime.run_single(x)

    return run


def _time(
    model: MultiExitNetwork,
    cal: ExitCalibration,
    test: ImageDataset,
    variant: str,
    betas: Sequence[float],
    points: list[dict[str, Any]],
    samples: int,
    rounds: int,
    batch: int,
) -> dict[str, Any]:
    """Batch-1 latency and batched throughput of the plain backbone vs each beta, interleaved."""
    n = min(samples, len(test))
    x_all = next(test.subset(torch.arange(n)).batches(n, shuffle=False))[0]
    singles = [x_all[i : i + 1] for i in range(n)]
    base = AdaptiveRuntime(model, CalibratedThreshold(cal, betas[0], variant), check_inputs=False)
    runtimes = {f"beta={b:g}": base.with_policy(CalibratedThreshold(cal, b, variant)) for b in betas}
    plain = base.plain_backbone()  # the same folded stages the runtimes run
    # The batch-1 path must agree with the batched one on the timed images.
    agree = True
    for rt in runtimes.values():
        batched = rt.run_batched(x_all)
        single = torch.tensor([rt.run_single(s)[1] for s in singles])
        agree &= bool(torch.equal(batched.exit_index, single))
    one = interleaved_timing(
        {"backbone": plain, **{k: _single(rt) for k, rt in runtimes.items()}},
        singles,
        reference="backbone",
        rounds=rounds,
    )
    nb = min(len(test), batch * 8)
    big = [x for x, _ in test.subset(torch.arange(nb)).batches(batch, shuffle=False)]
    many = interleaved_timing(
        {"backbone": plain, **{k: rt.run_batched for k, rt in runtimes.items()}},
        big,
        reference="backbone",
        rounds=rounds,
    )
    per_beta = []
    for b, p in zip(betas, points, strict=True):
        k = f"beta={b:g}"
        per_beta.append(
            {
                "beta": b,
                "relative_macs": p["relative_macs"],
                "batch1_ms": one.median(k) * 1e3,
                "batch1_speedup": one.speedup(k),
                "batched_ms": many.median(k) * 1e3,
                "batched_speedup": many.speedup(k),
            }
        )
    log.info("timed %d single images and %d batched images, %d rounds", n, nb, rounds)
    return {
        "threads": torch.get_num_threads(),
        "batch1_samples": n,
        "batched_size": batch,
        "batched_samples": nb,
        "rounds": rounds,
        "batch1_paths_agree": agree,
        "backbone_batch1_ms": one.median("backbone") * 1e3,
        "backbone_batched_ms": many.median("backbone") * 1e3,
        "per_beta": per_beta,
    }
