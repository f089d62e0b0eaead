"""onnxruntime vs PyTorch eager, plain backbone and adaptive inference, timed interleaved.

    .venv/bin/python benchmarks/deploy.py CHECKPOINT [--out DIR] [--threads N] [--samples 500]
        [--batched 2048] [--rounds 5] [--beta B] [--onnx-exporter dynamo|legacy]

Exports the checkpoint twice into a temporary folder (fused stage+exit graphs, the deployed
form, and one graph per stage and per exit, to show where the time goes), then on the test
images of the checkpoint's dataset (Fashion-MNIST for the demo) measures, in the same run with
the configurations interleaved (A B C D, rotated every round; docs/method.md §7: timing drifts up to 2x
between minutes on shared CPUs, so only same-run ratios mean much):

* batch-1 latency, median and p95 over every call of every round, for PyTorch eager
  (`AdaptiveRuntime`, inference forms) and onnxruntime (`OnnxAdaptiveRunner`), each for the
  plain backbone and for adaptive inference under the same rule and beta;
* batched throughput (batch 256, shrinking batches for adaptive inference), images/s;
* the compute ratio the rule achieves (counted MACs of what ran / the backbone's), accuracy,
  and whether both engines took the same exits;
* each graph's onnxruntime call time at batch 1 and 256 (fused and separate layouts) and the
  numpy decision.

Writes deploy_benchmark.json and deploy_benchmark.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from bofexits.data.registry import load_dataset
from bofexits.deploy.onnx import deploy_info, export_onnx
from bofexits.deploy.runner import OnnxAdaptiveRunner, _score_one
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.timing import cpu_model
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.training.checkpoint import load_checkpoint


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def interleaved(
    runs: dict[str, Callable[[Any], object]], inputs: dict[str, list[Any]], rounds: int
) -> dict[str, Any]:
    """Per-call seconds of each configuration over its inputs, configurations rotated each round.

    Returns per configuration: every call's seconds, and per round the mean seconds per call.
    """
    names = list(runs)
    for name in names:  # warm-up: lazy initialisation, caches
        for x in inputs[name][:20]:
            runs[name](x)
    calls: dict[str, list[float]] = {n: [] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, times = runs[name], []
            for x in inputs[name]:
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
            calls[name] += times
            per_round[name].append(sum(times) / len(times))
    return {"calls": calls, "rounds": per_round}


def ratio(per_round: dict[str, list[float]], reference: str, name: str) -> float:
    """Median over rounds of reference time / name time (same-round pairs)."""
    return statistics.median(a / b for a, b in zip(per_round[reference], per_round[name], strict=True))


def graph_times(runner: OnnxAdaptiveRunner, x: np.ndarray, reps: int) -> list[dict[str, Any]]:
    """Median microseconds per image of each graph's session call, fed by the chain on `x`.

    At batch 1 also the decision the runner makes after each exit (finiteness check, score,
    comparison), as `OnnxAdaptiveRunner.run_single` does it.
    """
    layout, rows = runner.manifest["layout"], []

    def add(name: str, fn: Callable[[], object], n: int) -> None:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rows.append(
            {"layout": layout, "part": name, "batch": n, "us_per_image": statistics.median(times) / n * 1e6}
        )

    state, feats, out = None, x, {}
    for g in runner.graphs:
        feed = {"features" if g.role == "exit" else "x": feats}
        if "state" in g.inputs and state is not None:
            feed["state"] = state
        out = g(**feed)
        add(g.name, lambda g=g, feed=feed: g(**feed), x.shape[0])
        feats, state = out.get("features", feats), out.get("next_state", state)
    if x.shape[0] == 1:
        logits, t = out["logits"], runner.thresholds[0]
        add(
            "decision (numpy)",
            lambda: bool(np.isfinite(logits).all()) and _score_one(logits, runner.score) >= t,
            1,
        )
    return rows


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="PyTorch threads")
    ap.add_argument(
        "--ort-threads",
        type=int,
        default=1,
        help="onnxruntime threads per graph session (default 1, the runner's: pools of 2 contend on 2 cores)",
    )
    ap.add_argument("--samples", type=int, default=500, help="test images timed at batch 1")
    ap.add_argument("--batched", type=int, default=2048, help="test images timed in batches")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--graph-reps", type=int, default=200, help="calls per graph for the breakdown")
    ap.add_argument(
        "--beta", type=float, help="the knob (default: the checkpoint's tuned one, else the default)"
    )
    ap.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo")
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, info = deploy_info(args.checkpoint, beta=args.beta, data_dir=args.data_dir)
    model = model.float().eval()
    runtime = AdaptiveRuntime(model, info.policy, check_inputs=False)
    torch_backbone = runtime.plain_backbone()
    tmpdir = tempfile.TemporaryDirectory(prefix="bofexits-deploy-bench-")
    tmp = Path(tmpdir.name)
    common = {
        "beta": info.beta,
        "variant": info.variant,
        "score": info.calibration.score,
        "data_dir": args.data_dir,
    }
    t0 = time.perf_counter()
    fused = export_onnx(args.checkpoint, tmp / "fused", exporter=args.onnx_exporter, **common)
    separate = export_onnx(
        args.checkpoint, tmp / "separate", exporter=args.onnx_exporter, layout="separate", **common
    )
    export_s = time.perf_counter() - t0
    runner = OnnxAdaptiveRunner(fused, threads=args.ort_threads, check_inputs=False)
    runner_sep = OnnxAdaptiveRunner(separate, threads=args.ort_threads, check_inputs=False)

    cfg_dataset = str(load_checkpoint(args.checkpoint)["config"]["dataset"])
    _, test = load_dataset(cfg_dataset, args.data_dir)
    n_eval = min(len(test), max(args.samples, args.batched))
    x_all, y_all = next(test.subset(torch.arange(n_eval)).batches(n_eval, shuffle=False))
    x_np = x_all.numpy()

    # Batch 1: every configuration on the same images, interleaved.
    singles_t = [x_all[i : i + 1] for i in range(min(args.samples, n_eval))]
    singles_n = [t.numpy() for t in singles_t]
    b1 = interleaved(
        {
            "pytorch backbone": torch_backbone,
            "pytorch adaptive": runtime.run_single,
            "onnxruntime backbone": lambda x: runner.backbone(x=x),
            "onnxruntime adaptive": runner.run_single,
        },
        {
            "pytorch backbone": singles_t,
            "pytorch adaptive": singles_t,
            "onnxruntime backbone": singles_n,
            "onnxruntime adaptive": singles_n,
        },
        args.rounds,
    )
    # Batched: shrinking batches for adaptive inference.
    nb = min(args.batched, n_eval)
    batches_t = [x_all[i : i + args.batch_size] for i in range(0, nb, args.batch_size)]
    batches_n = [b.numpy() for b in batches_t]
    bb = interleaved(
        {
            "pytorch backbone": torch_backbone,
            "pytorch adaptive": runtime.run_batched,
            "onnxruntime backbone": lambda x: runner.backbone(x=x),
            "onnxruntime adaptive": runner.run_batched,
        },
        {
            "pytorch backbone": batches_t,
            "pytorch adaptive": batches_t,
            "onnxruntime backbone": batches_n,
            "onnxruntime adaptive": batches_n,
        },
        max(1, args.rounds),
    )

    # What the rule achieves, and whether both engines agree on every image.
    torch_res = runtime.run_batched(x_all)
    ort_res = runner.run_batched(x_np)
    costs = measure_costs(model)
    macs = costs.macs_for(torch_res.exit_index)
    exits = np.bincount(ort_res.exit_index, minlength=model.num_exits) / n_eval
    accuracy = {
        "backbone": float((torch_backbone(x_all).argmax(1) == y_all).float().mean()),
        "adaptive": float((torch_res.predictions == y_all).float().mean()),
    }
    where = graph_times(runner_sep, x_np[:1], args.graph_reps) + graph_times(
        runner, x_np[:1], args.graph_reps
    )
    where += graph_times(runner_sep, x_np[: args.batch_size], max(3, args.graph_reps // 40))
    where += graph_times(runner, x_np[: args.batch_size], max(3, args.graph_reps // 40))

    rows = []
    for name in b1["calls"]:
        ms = [t * 1e3 for t in b1["calls"][name]]
        images_s = [1.0 / t for t in bb["rounds"][name]]
        per_image = [
            t / args.batch_size for t in bb["rounds"][name]
        ]  # last batch may be smaller: close enough
        rows.append(
            {
                "config": name,
                "batch1_median_ms": statistics.median(ms),
                "batch1_p95_ms": p95(ms),
                "batch1_speedup_vs_pytorch_backbone": ratio(b1["rounds"], "pytorch backbone", name),
                "batched_images_per_s": statistics.median(images_s) * args.batch_size,
                "batched_speedup_vs_pytorch_backbone": ratio(bb["rounds"], "pytorch backbone", name),
                "batched_us_per_image": statistics.median(per_image) * 1e6,
            }
        )
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": f"{cfg_dataset} test set, first {n_eval} images",
        "rule": {
            "score": info.calibration.score,
            "variant": info.variant,
            "beta": info.beta,
            "source": info.beta_source,
        },
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine()},
        "software": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
        "threads": args.threads,
        "ort_threads": args.ort_threads,
        "batch1_images": len(singles_t),
        "batched_images": nb,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "onnx_exporter": args.onnx_exporter,
        "export_seconds_both_layouts": export_s,
        "rows": rows,
        "relative_macs": float(macs.mean() / costs.backbone_macs),
        "exit_fractions": exits.tolist(),
        "accuracy": accuracy,
        "engines_agree": {
            "exits": float((ort_res.exit_index == torch_res.exit_index.numpy()).mean()),
            "predictions": float((ort_res.predictions == torch_res.predictions.numpy()).mean()),
            "max_logit_difference": float(np.abs(ort_res.logits - torch_res.logits.numpy()).max()),
        },
        "graph_times": where,
    }
    tmpdir.cleanup()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "deploy_benchmark.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {args.out / 'deploy_benchmark.json'}, {args.out / 'deploy_benchmark.md'}")


def markdown(r: dict[str, Any]) -> str:
    rule = r["rule"]
    lines = [
        f"{r['dataset']}; {rule['variant']} rule on {rule['score']}, beta={rule['beta']:g} ({rule['source']}). "
        f"CPU: {r['hardware']['cpu']} ({r['hardware']['cores']} cores), PyTorch {r['threads']} thread(s), "
        f"onnxruntime {r.get('ort_threads', r['threads'])} thread(s) per graph session; "
        f"batch 1 over {r['batch1_images']} images, batched {r['batch_size']} over {r['batched_images']}; "
        f"{r['rounds']} interleaved rounds; torch {r['software']['torch']}, "
        f"onnxruntime {r['software']['onnxruntime']}.",
        "",
        "| configuration | batch-1 median ms | batch-1 p95 ms | batch-1 speedup | images/s (batched) "
        "| batched speedup |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['config']} | {row['batch1_median_ms']:.3f} | {row['batch1_p95_ms']:.3f} | "
            f"{row['batch1_speedup_vs_pytorch_backbone']:.2f}x | {row['batched_images_per_s']:.0f} | "
            f"{row['batched_speedup_vs_pytorch_backbone']:.2f}x |"
        )
    agree = r["engines_agree"]
    fractions = " / ".join(f"{f:.2f}" for f in r["exit_fractions"])
    lines += [
        "",
        "Speedups are against the PyTorch plain backbone in the same rounds. "
        f"Compute: {100 * r['relative_macs']:.1f}% of the backbone's MACs; exit fractions {fractions}; accuracy "
        f"{100 * r['accuracy']['adaptive']:.2f}% adaptive vs {100 * r['accuracy']['backbone']:.2f}% backbone. "
        f"onnxruntime and PyTorch agree on {100 * agree['exits']:.2f}% of exits and {100 * agree['predictions']:.2f}% "
        f"of predictions (max logit difference {agree['max_logit_difference']:.1e}).",
        "",
        "| layout | onnxruntime graph or step | batch | us per image |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {g['layout']} | {g['part']} | {g['batch']} | {g['us_per_image']:.1f} |" for g in r["graph_times"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
