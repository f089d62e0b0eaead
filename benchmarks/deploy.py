"""onnxruntime vs PyTorch eager, plain backbone and adaptive inference, timed interleaved.

    .venv/bin/python benchmarks/deploy.py CHECKPOINT [--out DIR] [--threads N] [--samples 500]
        [--batched 2048] [--rounds 5] [--beta B] [--onnx-exporter dynamo|legacy] [--device auto|cpu|cuda[:N]]

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

--device puts the PyTorch model there (auto: a GPU when one is visible) and onnxruntime on its CUDA
provider when it has one (else on the CPU; the JSON records its providers).

Writes deploy_benchmark.json and deploy_benchmark.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from _common import efficiency_cell, machine, versions, write_result

from bofexits.deploy.onnx import deploy_info, export_onnx
from bofexits.deploy.predict import onnx_providers
from bofexits.deploy.rule import score_one
from bofexits.deploy.runner import OnnxAdaptiveRunner
from bofexits.devices import DEVICE_HELP, describe_device, device_argument, resolve_device
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.points import runtime_efficiency
from bofexits.evaluation.timing import Timing, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.reporting.format import fractions, pct, times
from bofexits.reporting.tables import markdown_table
from bofexits.training.checkpoint import load_model
from bofexits.training.splits import load_run_data

REFERENCE = "pytorch backbone"
"""Every speedup is against PyTorch's plain backbone, timed in the same rounds."""


def graph_times(runner: OnnxAdaptiveRunner, x: np.ndarray, reps: int) -> list[dict[str, Any]]:
    """Median microseconds per image of each graph's session call, fed by the chain on `x`.

    At batch 1 also the decision the runner makes after each exit (finiteness check, score,
    comparison), as `OnnxAdaptiveRunner.run_single` does it.
    """
    layout, rows = runner.manifest.layout, []

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
            lambda: bool(np.isfinite(logits).all()) and score_one(logits, runner.score) >= t,
            1,
        )
    return rows


def _parser() -> argparse.ArgumentParser:
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
    ap.add_argument("--device", type=device_argument, default="auto", help=f"{DEVICE_HELP} (default auto)")
    return ap


@dataclass
class Engines:
    """The four configurations: PyTorch and onnxruntime, each plain backbone and adaptive."""

    runtime: AdaptiveRuntime
    backbone: Callable[[torch.Tensor], torch.Tensor]  # AdaptiveRuntime.plain: same optimisations
    runner: OnnxAdaptiveRunner  # fused stage+exit graphs, the deployed form
    runner_separate: OnnxAdaptiveRunner  # one graph per stage and per exit
    export_s: float


def _engines(args: argparse.Namespace, tmp: Path) -> tuple[Engines, Any]:
    """Load the checkpoint into PyTorch and export it in both ONNX layouts into `tmp`."""
    model, info = deploy_info(args.checkpoint, beta=args.beta, data_dir=args.data_dir)
    model = model.float().eval().to(resolve_device(args.device))
    runtime = AdaptiveRuntime(model, info.policy, check_inputs=False)
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
    providers = onnx_providers(args.device, onnxruntime.get_available_providers(), strict=False)
    runner = OnnxAdaptiveRunner(fused, threads=args.ort_threads, check_inputs=False, providers=providers)
    runner_sep = OnnxAdaptiveRunner(
        separate, threads=args.ort_threads, check_inputs=False, providers=providers
    )
    return Engines(runtime, runtime.plain, runner, runner_sep, export_s), info


def _time_engines(
    e: Engines, singles: list[torch.Tensor], batches: list[torch.Tensor], rounds: int
) -> tuple[Timing, Timing]:
    """Batch 1 and batched (shrinking batches for adaptive inference): every configuration on the
    same images, interleaved, the order rotated every round."""

    def ort_backbone(x: np.ndarray) -> object:
        return e.runner.backbone(x=x)

    timings = []
    for xs, adaptive, ort_adaptive in (
        (singles, e.runtime.run_single, e.runner.run_single),
        (batches, e.runtime.run_batched, e.runner.run_batched),
    ):
        arrays = [x.cpu().numpy() for x in xs]
        runs = {
            REFERENCE: e.backbone,
            "pytorch adaptive": adaptive,
            "onnxruntime backbone": ort_backbone,
            "onnxruntime adaptive": ort_adaptive,
        }
        inputs: dict[str, Any] = {
            REFERENCE: xs,
            "pytorch adaptive": xs,
            "onnxruntime backbone": arrays,
            "onnxruntime adaptive": arrays,
        }
        timings.append(interleaved_timing(runs, inputs, reference=REFERENCE, rounds=rounds))
    return timings[0], timings[1]


_SAME_RUNTIME_PLAIN = {"pytorch adaptive": REFERENCE, "onnxruntime adaptive": "onnxruntime backbone"}


def _rows(b1: Timing, bb: Timing, relative_macs: float) -> list[dict[str, Any]]:
    """One row per configuration: batch-1 latency statistics, batched throughput, mean-based speedups.

    Speedups are total time / images of the plain backbone over the configuration's, both in the
    same interleaved rounds: against PyTorch's plain backbone, and against the same runtime's
    plain backbone, whose ratio over the compute speedup is the runtime efficiency.
    """
    rows = []
    for name in b1.rounds:
        plain = _SAME_RUNTIME_PLAIN.get(name, name)
        adaptive = name in _SAME_RUNTIME_PLAIN
        one, many = b1.mean(plain) / b1.mean(name), bb.mean(plain) / bb.mean(name)
        rows.append(
            {
                "config": name,
                "batch1_median_ms": b1.percentile(name, 50) * 1e3,
                "batch1_mean_ms": b1.mean(name) * 1e3,
                "batch1_p95_ms": b1.percentile(name, 95) * 1e3,
                "batch1_p99_ms": b1.percentile(name, 99) * 1e3,
                "batch1_speedup_vs_pytorch_backbone": b1.mean_speedup(name),
                "batch1_speedup_vs_same_runtime_backbone": one,
                "batch1_efficiency": runtime_efficiency(one, relative_macs) if adaptive else None,
                "batched_images_per_s": 1.0 / bb.mean(name),
                "batched_speedup_vs_pytorch_backbone": bb.mean_speedup(name),
                "batched_speedup_vs_same_runtime_backbone": many,
                "batched_efficiency": runtime_efficiency(many, relative_macs) if adaptive else None,
                "batched_us_per_image": bb.mean(name) * 1e6,
            }
        )
    return rows


def _achieved(e: Engines, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What the rule achieves on `x`, and whether both engines take the same exits on every image."""
    on_device = e.runtime.run_batched(x)
    torch_res = ExitResult(on_device.logits.cpu(), on_device.exit_index.cpu())
    ort_res = e.runner.run_batched(x.cpu().numpy())
    costs = measure_costs(e.runtime.model)
    macs = costs.macs_for(torch_res.exit_index)
    return {
        "relative_macs": float(macs.mean() / costs.backbone_macs),
        "exit_fractions": (
            np.bincount(ort_res.exit_index, minlength=len(costs.stage_macs)) / len(x)
        ).tolist(),
        "accuracy": {
            "backbone": float((e.backbone(x).argmax(1).cpu() == y).float().mean()),
            "adaptive": float((torch_res.predictions == y).float().mean()),
        },
        "engines_agree": {
            "exits": float((ort_res.exit_index == torch_res.exit_index.numpy()).mean()),
            "predictions": float((ort_res.predictions == torch_res.predictions.numpy()).mean()),
            "max_logit_difference": float(np.abs(ort_res.logits - torch_res.logits.numpy()).max()),
        },
    }


def _where(e: Engines, x: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each graph's call time, both layouts, at batch 1 and batched."""
    few = max(3, args.graph_reps // 40)
    return [
        *graph_times(e.runner_separate, x[:1], args.graph_reps),
        *graph_times(e.runner, x[:1], args.graph_reps),
        *graph_times(e.runner_separate, x[: args.batch_size], few),
        *graph_times(e.runner, x[: args.batch_size], few),
    ]


def _write(result: dict[str, Any], out: Path) -> None:
    write_result(out, "deploy_benchmark", result, markdown(result))
    print(f"\nwritten: {out / 'deploy_benchmark.json'}, {out / 'deploy_benchmark.md'}")


@torch.inference_mode()
def main() -> None:
    args = _parser().parse_args()
    device = resolve_device(args.device)  # a GPU that is not there: before the exports
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bofexits-deploy-bench-") as tmp:
        engines, info = _engines(args, Path(tmp))
        cfg = load_model(args.checkpoint)[2]
        dataset = cfg.dataset
        _, test = load_run_data(cfg, args.data_dir)  # the run's own data, as every CLI verb reads it
        n_eval = min(len(test), max(args.samples, args.batched))
        x_all, y_all = next(test.subset(torch.arange(n_eval)).batches(n_eval, shuffle=False))
        x_dev = x_all.to(device)  # moved once: no timed call pays for a copy
        singles = [x_dev[i : i + 1] for i in range(min(args.samples, n_eval))]
        nb = min(args.batched, n_eval)
        b1, bb = _time_engines(
            engines,
            singles,
            [x_dev[i : i + args.batch_size] for i in range(0, nb, args.batch_size)],
            args.rounds,
        )
        result = {
            "checkpoint": str(args.checkpoint),
            "dataset": f"{dataset} test set, first {n_eval} images",
            "rule": {
                "score": info.calibration.score,
                "variant": info.variant,
                "beta": info.beta,
                "source": info.beta_source,
            },
            "hardware": machine(),
            "software": versions(torch, onnxruntime, np),
            "device": describe_device(device),
            "ort_providers": engines.runner.backbone.session.get_providers(),
            "threads": args.threads,
            "ort_threads": args.ort_threads,
            "batch1_images": len(singles),
            "batched_images": nb,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "onnx_exporter": args.onnx_exporter,
            "export_seconds_both_layouts": engines.export_s,
            **(achieved := _achieved(engines, x_dev, y_all)),
            "rows": _rows(b1, bb, achieved["relative_macs"]),
            "graph_times": _where(engines, x_all.numpy(), args),
        }
    _write(result, args.out)


def markdown(r: dict[str, Any]) -> str:
    """deploy_benchmark.md: the setup, a row per configuration, what the rule achieved, each graph's time."""
    rule, hw, sw, agree, acc = r["rule"], r["hardware"], r["software"], r["engines_agree"], r["accuracy"]
    setup = (
        f"{r['dataset']}; {rule['variant']} rule on {rule['score']}, beta={rule['beta']:g} ({rule['source']}). "
        f"CPU: {hw['cpu']} ({hw['cores']} cores), PyTorch on {r.get('device', 'cpu')}, {r['threads']} thread(s); "
        f"onnxruntime on {r.get('ort_providers', ['CPUExecutionProvider'])[0]}, "
        f"{r.get('ort_threads', r['threads'])} thread(s) per graph session; batch 1 over {r['batch1_images']} "
        f"images, batched {r['batch_size']} over {r['batched_images']}; {r['rounds']} interleaved rounds; torch "
        f"{sw['torch']}, onnxruntime {sw['onnxruntime']}."
    )
    header = ["configuration", "batch-1 median ms", "batch-1 mean ms", "batch-1 p95 ms", "batch-1 p99 ms"]
    header += ["batch-1 speedup vs PyTorch / same runtime", "efficiency", "images/s (batched)"]
    header += ["batched speedup vs PyTorch / same runtime", "efficiency"]
    rows = [
        [
            row["config"],
            *[
                f"{row[k]:.3f}" if k in row else "-"
                for k in ("batch1_median_ms", "batch1_mean_ms", "batch1_p95_ms", "batch1_p99_ms")
            ],
            f"{times(row['batch1_speedup_vs_pytorch_backbone'])} / "
            f"{times(row.get('batch1_speedup_vs_same_runtime_backbone', math.nan))}",
            efficiency_cell(row.get("batch1_efficiency")),
            f"{row['batched_images_per_s']:.0f}",
            f"{times(row['batched_speedup_vs_pytorch_backbone'])} / "
            f"{times(row.get('batched_speedup_vs_same_runtime_backbone', math.nan))}",
            efficiency_cell(row.get("batched_efficiency")),
        ]
        for row in r["rows"]
    ]
    achieved = (
        f"Speedups are mean time per image against `{REFERENCE}` (PyTorch's plain backbone) and against "
        "the same runtime's plain backbone, timed in the same rounds; efficiency = the latter / the compute "
        f"speedup ({times(1 / r['relative_macs'])}). Compute: "
        f"{pct(r['relative_macs'], 1)} of the "
        f"backbone's MACs; exit fractions {fractions(r['exit_fractions'])}; accuracy {pct(acc['adaptive'])} "
        f"adaptive vs {pct(acc['backbone'])} backbone. onnxruntime and PyTorch agree on {pct(agree['exits'])} of "
        f"exits and {pct(agree['predictions'])} of predictions (max logit difference "
        f"{agree['max_logit_difference']:.1e})."
    )
    graphs = [[g["layout"], g["part"], str(g["batch"]), f"{g['us_per_image']:.1f}"] for g in r["graph_times"]]
    graph_header = ["layout", "onnxruntime graph or step", "batch", "us per image"]
    return "\n".join(
        [setup, "", markdown_table(header, rows), "", achieved, "", markdown_table(graph_header, graphs)]
    )


if __name__ == "__main__":
    main()
