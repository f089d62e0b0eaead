"""Cost-aware exit placement on a trained run: the candidates, the subset kept, and the test-set knee
of the run's own exits against the placed ones (docs/decisions.md, "Cost-aware exit placement").

    .venv/bin/python benchmarks/placement.py CHECKPOINT --out runs/placed [--data-dir DIR]
        [--epochs 3] [--retrain-epochs 1] [--cost macs] [--threads 1]

Runs `bofexits.place` (candidate exits at every unit of the frozen backbone, the subset with the
cheapest validation knee kept, re-trained and recalibrated, a new run in --out), then reads the
test set, which the placement never saw, for the report: each candidate's accuracy kept alone
(validation and test), and for the source run and the placed run the per-exit accuracy, the
knee (the cheapest beta of `beta_grid` within 0.5 pp of the full network, `knee_point`) and the
oracle ratio (the knee's MACs over the least mean MACs at which the oracle frontier reaches the
knee's accuracy, as the report's claim (c) counts it). Writes placement_benchmark.json and .md
beside the placed run's placement.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bofexits._io import write_json, write_text
from bofexits.config import TrainConfig
from bofexits.data import ImageDataset
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import knee_point
from bofexits.inference.offline import oracle_frontier
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibration import ExitCalibration
from bofexits.training.candidates import train_candidates
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.place import Placement, finish, search, write_placed_run
from bofexits.training.splits import run_splits
from bofexits.training.subsets import SubsetScore
from bofexits.training.tuning import beta_points

log = logging.getLogger("placement")


def run_summary(
    model: MultiExitNetwork, calibrations: dict[str, ExitCalibration], cfg: TrainConfig, test: ImageDataset
) -> dict[str, Any]:
    """Per-exit test accuracy, the test knee and the oracle ratio of one network."""
    logits, labels = collect_logits(model, test)
    costs = measure_costs(model)
    full = accuracy(logits[-1].argmax(1), labels)
    points = beta_points(logits, labels, calibrations[cfg.score], costs, cfg.variant)
    knee = knee_point(points, full)
    f_macs, f_acc = oracle_frontier(logits, labels, costs.macs_at_exit())
    reach = None
    if knee is not None:
        ok = torch.nonzero(f_acc >= knee.accuracy - 1e-6).flatten()  # float32 accuracies
        reach = float(f_macs[ok[0]]) / costs.backbone_macs if ok.numel() else None
    return {
        "exit_points": cfg.model.exit_points,
        "exit_accuracy": [accuracy(lg.argmax(1), labels) for lg in logits],
        "first_exit_macs": costs.first_exit_fraction,
        "exit_macs": costs.exit_macs,
        "knee_macs": None if knee is None else knee.relative_macs,
        "knee_accuracy": None if knee is None else knee.accuracy,
        "knee_exit_fractions": None if knee is None else knee.exit_fractions,
        "oracle_macs_at_knee_accuracy": reach,
        "oracle_ratio": None if knee is None or not reach else knee.relative_macs / reach,
    }


def _subset(s: SubsetScore | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "kept": s.keep,
        "val_knee_macs": s.knee_macs,
        "val_objective": s.objective,
        "val_head_ms": s.head_ms,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--retrain-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if (args.out / "checkpoint.pt").exists():
        raise SystemExit(f"{args.out} already holds a run; choose another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, calibrations, cfg = load_model(args.checkpoint)
    cands = train_candidates(model, cfg, epochs=args.epochs, data_dir=args.data_dir)
    _, _, test = run_splits(cfg, args.data_dir)
    arms: dict[str, Any] = {"source": {"val": None, **run_summary(model, calibrations, cfg, test)}}
    chosen: dict[str, SubsetScore] = {}
    default: SubsetScore | None = None
    for cost in ("macs", "time"):
        clock = time.perf_counter()
        chosen[cost], seen, default = search(cands, cost)
        log.info(
            "cost %s: kept %s of %d scored in %.0f s",
            cost,
            chosen[cost].keep,
            len(seen),
            time.perf_counter() - clock,
        )
    todo = {"placed (macs)": chosen["macs"].keep, "placed (time)": chosen["time"].keep}
    if default is not None:
        todo["default positions, same training"] = default.keep
    done: dict[tuple[int, ...], str] = {}
    for name, keep in todo.items():
        if tuple(keep) in done:
            arms[name] = {**arms[done[tuple(keep)]], "same_as": done[tuple(keep)]}
            continue
        net, run_cfg, cals, before, after = finish(cands, keep, args.retrain_epochs)
        score = default if name.startswith("default") else chosen["time" if "time" in name else "macs"]
        arms[name] = {
            "val": _subset(score),
            "val_accuracy_before_retrain": before,
            "val_accuracy_after_retrain": after,
            **run_summary(net, cals, run_cfg, test),
        }
        done[tuple(keep)] = name
        if name == "placed (macs)":
            result = Placement(
                checkpoint=args.out / "checkpoint.pt",
                candidates=cands.table(),
                kept=keep,
                exit_points=list(run_cfg.model.exit_points or []),
                cost="macs",
                backbone_macs=sum(cands.unit_macs),
                backbone_ms=cands.backbone_ms,
                chosen=chosen["macs"],
                default=default,
                subsets_scored=len(seen),
                val_accuracy_before_retrain=before,
                val_accuracy=after,
                seconds=cands.seconds,
            )
            write_placed_run(args.out, net, run_cfg, cals, load_checkpoint(args.checkpoint), result)
    net = cands.net
    exits: Any = net.exits
    with torch.no_grad():
        net.eval()
        hits = torch.zeros(exits.num_exits)
        for x, y in test.batches(512, shuffle=False):
            maps, _ = net.features(x)
            for i, m in enumerate(maps):
                hits[i] += float((exits.classify(i, exits.histogram(i, m)).argmax(1) == y).sum())
    total = sum(cands.unit_macs)
    candidates = [
        {**c.__dict__, "test_accuracy": float(h) / len(test), "head_macs_share": c.head_macs / total}
        for c, h in zip(cands.table(), hits, strict=True)
    ]
    report = {
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "epochs": args.epochs,
        "retrain_epochs": args.retrain_epochs,
        "seconds": time.perf_counter() - start,
        "backbone_ms": cands.backbone_ms,
        "candidates": candidates,
        "kept": {k: v.keep for k, v in chosen.items()},
        "arms": arms,
    }
    write_json(args.out / "placement_benchmark.json", report)
    write_text(args.out / "placement_benchmark.md", markdown(report))
    print(markdown(report))
    return 0


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| unit | layer | map | backbone MACs before | head MACs (share) | head batch-1 ms "
        "| val acc alone | test acc alone | kept (macs / time) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(report["candidates"]):
        kept = " / ".join("yes" if i in report["kept"][k] else "-" for k in ("macs", "time"))
        lines.append(
            f"| {c['point']} | {c['unit']} | {'x'.join(map(str, c['map_shape']))} | {_pct(c['backbone_share'])} | "
            f"{c['head_macs']} ({_pct(c['head_macs_share'], 2)}) | {c['head_ms']:.3f} | "
            f"{_pct(c['val_accuracy'], 2)} | {_pct(c['test_accuracy'], 2)} | {kept} |"
        )
    lines += [
        "",
        f"Plain backbone batch-1: {report['backbone_ms']:.3f} ms, timed interleaved with the heads. "
        f"Candidate training {report['epochs']} epochs, re-training {report['retrain_epochs']}.",
        "",
        "| run | exits after units | test exit accuracies | test knee MACs | knee accuracy "
        "| oracle MACs there | oracle ratio | val knee MACs | val accuracy before / after re-training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["arms"].items():
        ratio = "-" if r["oracle_ratio"] is None else f"{r['oracle_ratio']:.2f}x"
        val = r.get("val")
        retrain = "-"
        if "val_accuracy_before_retrain" in r:
            retrain = (
                f"{', '.join(_pct(a, 2) for a in r['val_accuracy_before_retrain'])} / "
                f"{', '.join(_pct(a, 2) for a in r['val_accuracy_after_retrain'])}"
            )
        lines.append(
            f"| {name} | {r['exit_points'] or 'default stages'} | "
            f"{', '.join(_pct(a, 2) for a in r['exit_accuracy'])} | "
            f"{_pct(r['knee_macs'])} | {_pct(r['knee_accuracy'], 2)} | {_pct(r['oracle_macs_at_knee_accuracy'])} | "
            f"{ratio} | {_pct(val['val_knee_macs']) if val else '-'} | {retrain} |"
        )
    lines += ["", f"Whole benchmark: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
