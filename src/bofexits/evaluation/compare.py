"""Exit policies side by side on one trained network: every policy over its knob's range.

Accuracy, compute, exit fractions and balance come from the offline simulation (all exits'
outputs computed once, replayed through the runtime's own loop: "simulated from all exits").
A subset of points per policy (evenly spread, plus the knee and the matched-compute points)
is then run for real: timed at batch 1 and in batches against the plain backbone in the same
run, and its exits and predictions checked against the simulation on the same images.
Knob grids and the budgeted baseline's thresholds come from the validation split only.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bofexits._io import write_json, write_text
from bofexits.data import ImageDataset
from bofexits.evaluation.claims import cheapest_reaching, check_claims
from bofexits.evaluation.collect import collect_logits, summarize
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.sweep import knee_point
from bofexits.evaluation.timing import interleaved_timing, platform_info
from bofexits.inference.offline import oracle, oracle_frontier, simulate
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import (
    BudgetedThreshold,
    CalibratedThreshold,
    EntropyThreshold,
    ExitCalibration,
    ExitPolicy,
    GlobalThreshold,
    Patience,
    SingleExit,
    confidence,
)
from bofexits.training.tuning import beta_grid

__all__ = [
    "LEVELS",
    "Family",
    "at_compute",
    "compare_policies",
    "comparison_rows",
    "save_comparison",
    "decision_overhead_us",
    "policy_families",
]

log = logging.getLogger(__name__)

LEVELS: tuple[float, ...] = (0.25, 0.5, 0.75)
"""Compute levels (fractions of the backbone's MACs) at which policies are compared."""
MAX_DROP = 0.005
"""The knee: the cheapest point within 0.5 pp of the full network."""


@dataclass
class Family:
    """One policy over its knob, ordered from fastest to most accurate.

    Attributes:
        name: short id (`proposed`, `max-softmax`, ...).
        label: legend text.
        knob: what `values` are (beta, threshold, patience, budget, exit).
        values: knob values, fastest first.
        make: knob value -> policy.
        proposed: the paper's rule in the configuration the checkpoint was calibrated for.
        timed: run for real and timed (others are simulated only).
    """

    name: str
    label: str
    knob: str
    values: list[float]
    make: Callable[[float], ExitPolicy]
    proposed: bool = False
    timed: bool = True


def _quantile_grid(scores: torch.Tensor, points: int) -> list[float]:
    """Thresholds at evenly spaced quantiles of validation scores: even coverage of the range."""
    levels = torch.linspace(0, 1, points, dtype=torch.float64)
    return sorted({float(v) for v in torch.quantile(scores.double(), levels)})


def policy_families(
    calibrations: dict[str, ExitCalibration],
    val_logits: Sequence[torch.Tensor],
    costs: CostTable,
    *,
    score: str = "max_prob",
    variant: str = "conditional",
    points: int = 101,
) -> list[Family]:
    """Every policy with its knob grid; grids come from validation outputs, never the test set.

    Args:
        calibrations: the checkpoint's per-score statistics (proposed rule).
        val_logits: all S exits' logits on the validation split.
        costs: per-part MACs (budgets are fractions of the backbone's MACs).
        score, variant: the proposed rule's headline configuration.
        points: knob values per threshold policy.
    """
    early = list(val_logits[:-1])
    s = len(val_logits)
    prob = torch.cat([confidence(lg, "max_prob") for lg in early])
    entropy = torch.cat([-confidence(lg, "neg_entropy") for lg in early]).clamp_min(0)
    macs = costs.macs_at_exit()
    low, high = macs[0] / costs.backbone_macs, macs[-1] / costs.backbone_macs
    budgets = [low + (high - low) * i / 20 for i in range(21)]

    def rule(cal: ExitCalibration, v: str) -> Callable[[float], ExitPolicy]:
        return lambda beta: CalibratedThreshold(cal, beta, v)

    families = [
        Family(
            "proposed",
            f"proposed: {variant} rule on {score}",
            "beta",
            beta_grid(variant, points),
            rule(calibrations[score], variant),
            proposed=True,
        ),
        Family(
            "max-softmax",
            "max-softmax threshold (SDN)",
            "threshold",
            _quantile_grid(prob, points),
            lambda t: GlobalThreshold(min(max(t, 0.0), 1.0)),
        ),
        Family(
            "entropy",
            "entropy threshold (BranchyNet)",
            "threshold",
            _quantile_grid(entropy, points)[::-1],
            lambda t: EntropyThreshold(max(t, 0.0)),
        ),
        Family(
            "patience",
            "patience (PABEE)",
            "patience",
            [float(k) for k in range(1, s + 1)],
            lambda k: Patience(int(k)),
        ),
        Family(
            "budgeted",
            "budgeted thresholds (MSDNet)",
            "budget",
            budgets,
            lambda b: BudgetedThreshold.fit(early, macs, b, costs.backbone_macs, "max_prob"),
        ),
        Family(
            "single-exit", "single exit", "exit", [float(e) for e in range(s)], lambda e: SingleExit(int(e))
        ),
    ]
    for sc in ("max_prob", "max_logit"):
        for v in ("mean", "quantile", "conditional"):
            if (sc, v) != (score, variant) and sc in calibrations:
                families.append(
                    Family(
                        f"rule-{sc}-{v}",
                        f"{v} rule on {sc}",
                        "beta",
                        beta_grid(v, points),
                        rule(calibrations[sc], v),
                        timed=False,
                    )
                )
    return families


def at_compute(points: Sequence[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The most accurate point using at most `level` of the backbone's MACs (None if none does).

    >>> at_compute([{"relative_macs": 0.3, "accuracy": 0.8}, {"relative_macs": 0.6, "accuracy": 0.9}], 0.5)
    {'relative_macs': 0.3, 'accuracy': 0.8}
    """
    ok = [p for p in points if p["relative_macs"] <= level + 1e-9]
    return max(ok, key=lambda p: (p["accuracy"], -p["relative_macs"])) if ok else None


def _simulate_family(
    fam: Family, logits: Sequence[torch.Tensor], labels: torch.Tensor, costs: CostTable
) -> list[dict[str, Any]]:
    out = []
    for i, v in enumerate(fam.values):
        r = simulate(fam.make(v), logits)
        out.append({"index": i, fam.knob: v, **summarize(r.predictions, r.exit_index, labels, costs)})
    return out


def _picks(points: list[dict[str, Any]], targets: Sequence[dict[str, Any] | None], spread: int) -> list[int]:
    """Indices to run for real: `spread` evenly spaced ones plus the named points (spread 0: all).

    >>> _picks([{"index": i} for i in range(10)], [{"index": 6}], 3)
    [0, 4, 6, 9]
    """
    n = len(points)
    if spread <= 0:
        return list(range(n))
    idx = {round(i * (n - 1) / max(spread - 1, 1)) for i in range(min(spread, n))}
    idx |= {p["index"] for p in targets if p is not None}
    return sorted(idx)


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


def compare_policies(
    model: MultiExitNetwork,
    calibrations: dict[str, ExitCalibration],
    val: ImageDataset,
    test: ImageDataset,
    *,
    score: str = "max_prob",
    variant: str = "conditional",
    points: int = 101,
    timed_points: int = 9,
    timing_samples: int = 200,
    timing_rounds: int = 3,
    throughput_batch: int = 256,
    throughput_batches: int = 4,
) -> dict[str, Any]:
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
        throughput_batch, throughput_batches: batched timing over this many batches of this size.
    """
    model.eval()
    costs = measure_costs(model)
    val_logits, _ = collect_logits(model, val)
    test_logits, labels = collect_logits(model, test)
    full_acc = float((test_logits[-1].argmax(1) == labels).float().mean())
    families = policy_families(calibrations, val_logits, costs, score=score, variant=variant, points=points)
    best = oracle(test_logits, labels)
    f_macs, f_acc = oracle_frontier(test_logits, labels, costs.macs_at_exit())
    step = max(1, f_macs.numel() // 400)
    frontier = [
        [float(m) / costs.backbone_macs, float(a)] for m, a in zip(f_macs[::step], f_acc[::step], strict=True)
    ]
    frontier.append([float(f_macs[-1]) / costs.backbone_macs, float(f_acc[-1])])
    out_families: list[dict[str, Any]] = []
    for fam in families:
        pts = _simulate_family(fam, test_logits, labels, costs)
        out_families.append(
            {
                "name": fam.name,
                "label": fam.label,
                "knob": fam.knob,
                "proposed": fam.proposed,
                "timed": fam.timed,
                "points": pts,
                "knee": knee_point(pts, full_acc, MAX_DROP),
                "at_levels": {f"{lv:g}": at_compute(pts, lv) for lv in LEVELS},
            }
        )
    log.info("simulated %d policy points", sum(len(f["points"]) for f in out_families))
    proposed = next(f for f in out_families if f["proposed"])
    result: dict[str, Any] = {
        "source": "simulated from all exits' outputs; points with timing were also run for real",
        "num_test": len(test),
        "num_val": len(val),
        "platform": platform_info(),
        "costs": costs.to_dict(),
        "full_accuracy": full_acc,
        "levels": list(LEVELS),
        "max_drop": MAX_DROP,
        "oracle": {**summarize(best.predictions, best.exit_index, labels, costs), "frontier": frontier},
        "families": out_families,
        "exit_confidence_medians": [float(q) for q in calibrations["max_prob"].quantiles[:, 500]]
        if "max_prob" in calibrations
        else None,
    }
    if timing_samples > 0:
        knee_acc = proposed["knee"]["accuracy"] if proposed["knee"] else full_acc - MAX_DROP
        result["timing"] = _time_families(
            model,
            families,
            out_families,
            test,
            test_logits,
            knee_acc,
            timed_points,
            timing_samples,
            timing_rounds,
            throughput_batch,
            throughput_batches,
        )
        result["decision_overhead"] = _overheads(families, out_families, test_logits, result["timing"])
    result["claims"] = check_claims(result)
    return result


def _time_families(
    model: MultiExitNetwork,
    families: list[Family],
    out_families: list[dict[str, Any]],
    test: ImageDataset,
    test_logits: Sequence[torch.Tensor],
    knee_acc: float,
    spread: int,
    samples: int,
    rounds: int,
    batch: int,
    batches: int,
) -> dict[str, Any]:
    """Run chosen points for real: batch-1 and batched timing against the plain backbone, per
    policy interleaved in its own rounds, and a check of the exits against the simulation."""
    n = min(samples, len(test))
    nb = min(len(test), batch * batches)
    x_big, _ = next(test.subset(torch.arange(nb)).batches(nb, shuffle=False))
    singles = [x_big[i : i + 1] for i in range(n)] if n <= nb else None
    if singles is None:
        x_one, _ = next(test.subset(torch.arange(n)).batches(n, shuffle=False))
        singles = [x_one[i : i + 1] for i in range(n)]
    big = [x_big[i : i + batch] for i in range(0, nb, batch)]
    sim_logits = [lg[:nb] for lg in test_logits]
    base = AdaptiveRuntime(model, SingleExit(0), check_inputs=False)
    plain = base.plain_backbone()
    checked = mismatched_exits = mismatched_preds = 0
    backbone_b1: list[float] = []
    backbone_bb: list[float] = []
    for fam, out in zip(families, out_families, strict=True):
        if not fam.timed:
            continue
        pts = out["points"]
        picks = _picks(
            pts, [out["knee"], cheapest_reaching(pts, knee_acc), *out["at_levels"].values()], spread
        )
        runtimes = {i: base.with_policy(fam.make(fam.values[i])) for i in picks}
        for rt in runtimes.values():  # the real runtime must take the simulated exits
            real = rt.run_batched(x_big)
            sim = simulate(rt.policy, sim_logits)
            checked += 1
            mismatched_exits += int((real.exit_index != sim.exit_index).sum())
            mismatched_preds += int((real.predictions != sim.predictions).sum())
        one = interleaved_timing(
            {
                "backbone": plain,
                **{str(i): rt.run_single for i, rt in runtimes.items()},
            },
            singles,
            reference="backbone",
            rounds=rounds,
        )
        many = interleaved_timing(
            {"backbone": plain, **{str(i): rt.run_batched for i, rt in runtimes.items()}},
            big,
            reference="backbone",
            rounds=rounds,
        )
        backbone_b1.append(one.median("backbone"))
        backbone_bb.append(many.median("backbone"))
        for i in picks:
            k = str(i)
            pts[i]["timing"] = {
                "batch1_ms": one.median(k) * 1e3,
                "batch1_speedup": one.speedup(k),
                "batched_images_per_s": 1.0 / many.median(k),
                "batched_speedup": many.speedup(k),
            }
        log.info("timed %s at %d points", fam.name, len(picks))
    return {
        "threads": torch.get_num_threads(),
        "batch1_samples": n,
        "batched_size": batch,
        "batched_samples": nb,
        "rounds": rounds,
        "backbone_batch1_ms": 1e3 * sorted(backbone_b1)[len(backbone_b1) // 2],
        "backbone_batched_images_per_s": 1.0 / sorted(backbone_bb)[len(backbone_bb) // 2],
        "runtime_check": {
            "points": checked,
            "images_per_point": nb,
            "mismatched_exits": mismatched_exits,
            "mismatched_predictions": mismatched_preds,
        },
    }


def _overheads(
    families: list[Family],
    out_families: list[dict[str, Any]],
    test_logits: Sequence[torch.Tensor],
    timing: dict[str, Any],
) -> list[dict[str, Any]]:
    """Per-decision cost of each timed policy at its knee (or middle point), vs the backbone."""
    rows = []
    for fam, out in zip(families, out_families, strict=True):
        if not fam.timed or fam.name == "single-exit":
            continue
        point = out["knee"] or out["points"][len(out["points"]) // 2]
        us = decision_overhead_us(fam.make(fam.values[point["index"]]), test_logits)
        rows.append(
            {
                "policy": fam.name,
                "us_per_decision": us,
                "fraction_of_backbone_batch1": us / 1e3 / timing["backbone_batch1_ms"],
            }
        )
    return rows


CSV_FIELDS = (
    "policy",
    "knob",
    "value",
    "accuracy",
    "mean_macs",
    "relative_macs",
    "exit_fractions",
    "balance",
    "batch1_ms",
    "batch1_speedup",
    "batched_images_per_s",
    "batched_speedup",
    "source",
)


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (policy, knob value), for the CSV file.

    >>> rows = comparison_rows({"families": [{"name": "p", "knob": "beta", "points": [
    ...     {"beta": 0.5, "accuracy": 0.9, "mean_macs": 5.0, "relative_macs": 0.5,
    ...      "exit_fractions": [0.5, 0.5], "balance": 1.0}]}]})
    >>> rows[0]["exit_fractions"], rows[0]["source"]
    ('0.5000 0.5000', 'simulated')
    """
    rows = []
    for fam in comparison["families"]:
        for p in fam["points"]:
            t = p.get("timing", {})
            rows.append(
                {
                    "policy": fam["name"],
                    "knob": fam["knob"],
                    "value": p[fam["knob"]],
                    "accuracy": p["accuracy"],
                    "mean_macs": p["mean_macs"],
                    "relative_macs": p["relative_macs"],
                    "exit_fractions": " ".join(f"{f:.4f}" for f in p["exit_fractions"]),
                    "balance": p["balance"],
                    "batch1_ms": t.get("batch1_ms", ""),
                    "batch1_speedup": t.get("batch1_speedup", ""),
                    "batched_images_per_s": t.get("batched_images_per_s", ""),
                    "batched_speedup": t.get("batched_speedup", ""),
                    "source": "simulated + real runtime (timed, exits checked)" if t else "simulated",
                }
            )
    return rows


def save_comparison(comparison: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `policies.json` and `policies.csv` into `out_dir` (atomically)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "policies.json", comparison)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(comparison_rows(comparison))
    write_text(out_dir / "policies.csv", buf.getvalue())
    return out_dir / "policies.json", out_dir / "policies.csv"
