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
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bofexits._io import write_json, write_text
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.metrics import accuracy
from bofexits.evaluation.points import knee_point
from bofexits.inference.offline import oracle_frontier
from bofexits.training.checkpoint import load_model
from bofexits.training.place import place
from bofexits.training.splits import run_splits
from bofexits.training.tuning import beta_points


def run_summary(checkpoint: Path, data_dir: str | None) -> dict[str, Any]:
    """Per-exit test accuracy, the test knee and the oracle ratio of one run."""
    model, calibrations, cfg = load_model(checkpoint)
    _, _, test = run_splits(cfg, data_dir)
    logits, labels = collect_logits(model, test)
    costs = measure_costs(model)
    full = accuracy(logits[-1].argmax(1), labels)
    points = beta_points(logits, labels, calibrations[cfg.score], costs, cfg.variant)
    knee = knee_point(points, full)
    f_macs, f_acc = oracle_frontier(logits, labels, costs.macs_at_exit())
    reach = None
    if knee is not None:
        ok = torch.nonzero(f_acc >= knee.accuracy - 1e-12).flatten()
        reach = float(f_macs[ok[0]]) / costs.backbone_macs if ok.numel() else None
    return {
        "checkpoint": str(checkpoint),
        "exit_points": cfg.model.exit_points,
        "exit_accuracy": [accuracy(lg.argmax(1), labels) for lg in logits],
        "first_exit_macs": costs.first_exit_fraction,
        "exit_macs": costs.exit_macs,
        "knee_macs": None if knee is None else knee.relative_macs,
        "knee_accuracy": None if knee is None else knee.accuracy,
        "oracle_macs_at_knee_accuracy": reach,
        "oracle_ratio": None if knee is None or not reach else knee.relative_macs / reach,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--retrain-epochs", type=int, default=1)
    ap.add_argument("--cost", default="macs", choices=("macs", "time"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = place(
        args.checkpoint,
        args.out,
        epochs=args.epochs,
        retrain_epochs=args.retrain_epochs,
        cost=args.cost,
        data_dir=args.data_dir,
        threads=args.threads,
    )
    place_seconds = time.perf_counter() - start
    _, _, cfg = load_model(args.checkpoint)
    _, _, test = run_splits(cfg, args.data_dir)
    net = result.candidate_net
    assert net is not None
    exits: Any = net.exits
    test_acc = []
    with torch.no_grad():
        net.eval()
        hits = torch.zeros(exits.num_exits)
        for x, y in test.batches(512, shuffle=False):
            maps, _ = net.features(x)
            for i, m in enumerate(maps):
                hits[i] += float((exits.classify(i, exits.histogram(i, m)).argmax(1) == y).sum())
        test_acc = (hits / len(test)).tolist()
    candidates = [
        {**c.__dict__, "test_accuracy": t, "head_macs_share": c.head_macs / result.backbone_macs}
        for c, t in zip(result.candidates, test_acc, strict=True)
    ]
    report = {
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "place_seconds": place_seconds,
        "placement": {**result.to_dict(), "candidates": candidates},
        "source": run_summary(args.checkpoint, args.data_dir),
        "placed": run_summary(result.checkpoint, args.data_dir),
    }
    write_json(args.out / "placement_benchmark.json", report)
    write_text(args.out / "placement_benchmark.md", markdown(report))
    print(markdown(report))
    return 0


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def markdown(report: dict[str, Any]) -> str:
    p = report["placement"]
    lines = [
        "| unit | layer | map | backbone MACs before | head MACs (share) | head batch-1 ms "
        "| val acc alone | test acc alone | kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(p["candidates"]):
        lines.append(
            f"| {c['point']} | {c['unit']} | {'x'.join(map(str, c['map_shape']))} | {_pct(c['backbone_share'])} | "
            f"{c['head_macs']} ({_pct(c['head_macs_share'], 2)}) | {c['head_ms']:.3f} | {_pct(c['val_accuracy'], 2)} | "
            f"{_pct(c['test_accuracy'], 2)} | {'yes' if i in p['kept'] else ''} |"
        )
    lines += [
        "",
        f"Plain backbone batch-1: {p['backbone_ms']:.3f} ms (timed interleaved with the heads). Subsets scored: "
        f"{p['subsets_scored']}; cost: {p['cost']}. Validation accuracy of the kept exits before / after "
        f"re-training: {', '.join(_pct(a, 2) for a in p['val_accuracy_before_retrain'])} / "
        f"{', '.join(_pct(a, 2) for a in p['val_accuracy'])}.",
        "",
        "| run | exits after units | exit accuracies (test) | test knee MACs | knee accuracy "
        "| oracle at that accuracy | oracle ratio | val knee MACs (candidate exits) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key, val in (("source", "source", p["default"]), ("placed", "placed", p["chosen"])):
        r = report[key]
        ratio = "-" if r["oracle_ratio"] is None else f"{r['oracle_ratio']:.2f}x"
        lines.append(
            f"| {name} | {r['exit_points'] or 'default stages'} | "
            f"{', '.join(_pct(a, 2) for a in r['exit_accuracy'])} | "
            f"{_pct(r['knee_macs'])} | {_pct(r['knee_accuracy'], 2)} | {_pct(r['oracle_macs_at_knee_accuracy'])} | "
            f"{ratio} | {_pct(val['val_knee_macs']) if val else '-'} |"
        )
    lines.append("")
    lines.append(
        f"place took {report['place_seconds']:.0f} s ({json.dumps({k: round(v) for k, v in p['seconds'].items()})})."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
