"""Runtime x batch size x configuration: where compute saved becomes time saved, in one table.

    .venv/bin/python benchmarks/runtimes.py [CHECKPOINT] [--threads 2] [--batch-sizes 1 32 256]
        [--images 300] [--batched-images 2048] [--rounds 5] [--out runs/benchmarks/runtimes]
        [--device auto|cpu|cuda[:N]] [--readme] [--quick]

For each runtime (PyTorch eager: `AdaptiveRuntime` and its `plain`; onnxruntime: the exported
graphs run by `OnnxAdaptiveRunner` and its `backbone.onnx`) and each batch size, times four
configurations on the same test images, all eight callables interleaved in the same rounds (the
order rotates every round; docs/method.md §7: timing drifts up to 2x between minutes here):

* plain: the backbone alone, with every optimisation the adaptive path of that runtime gets;
* knee: adaptive at the knee's beta (the run's results.json, else the default beta);
* beta 0 (fastest) and beta 1 (most accurate).

Per row: mean ms per image (the headline: total time / images), p50 / p95 / p99 of single calls
(per image), images/s, the speedup against the same runtime's plain backbone (ratio of means),
the compute speedup (backbone MACs / mean MACs of what ran, counted from the exits the images
took) and the runtime efficiency (speedup / compute speedup). Also: accuracy of each
configuration on the timed images, and whether onnxruntime took the same exits as PyTorch.

--device puts the PyTorch model there (auto: a GPU when one is visible) and onnxruntime on its CUDA
provider when it has one (else on the CPU; the JSON records its providers).

Writes runtimes.json and runtimes.md into --out; --readme replaces the README block between
`<!-- runtimes:begin -->` and `<!-- runtimes:end -->`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from _common import knee_beta_or, machine, speed_cells, speed_header, versions, write_result

from bofexits.deploy.onnx import deploy_info, export_onnx
from bofexits.deploy.predict import onnx_providers
from bofexits.deploy.runner import OnnxAdaptiveRunner
from bofexits.devices import DEVICE_HELP, describe_device, device_argument, device_of, resolve_device
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.points import runtime_efficiency
from bofexits.evaluation.speedup import MAX_EFFICIENCY, plausible, ratio_interval
from bofexits.evaluation.timed import MEASURE_RETRIES, remeasured
from bofexits.evaluation.timing import Timing, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.policies import CalibratedThreshold
from bofexits.reporting.format import pct
from bofexits.reporting.tables import markdown_table
from bofexits.training.checkpoint import load_model
from bofexits.training.splits import load_run_data

RUNTIMES = ("pytorch eager", "onnxruntime")
PLAIN = "plain"


def _configs(knee: float) -> dict[str, float]:
    return {"knee": knee, "beta 0": 0.0, "beta 1": 1.0}


def _callables(
    runtime: AdaptiveRuntime, runners: dict[str, OnnxAdaptiveRunner], batch: int
) -> dict[str, Callable[[Any], object]]:
    """name -> callable for one batch size: PyTorch's on tensors, onnxruntime's on numpy arrays."""
    cal = runtime.policy
    assert isinstance(cal, CalibratedThreshold)
    out: dict[str, Callable[[Any], object]] = {f"pytorch eager/{PLAIN}": runtime.plain}
    for name, runner in runners.items():
        rt = runtime.with_policy(CalibratedThreshold(cal.calibration, runner.beta, cal.variant))
        out[f"pytorch eager/{name}"] = rt.run_single if batch == 1 else rt.run_batched
    some = next(iter(runners.values()))
    out[f"onnxruntime/{PLAIN}"] = some.run_backbone
    for name, runner in runners.items():
        out[f"onnxruntime/{name}"] = runner.run_single if batch == 1 else runner.run_batched
    return out


def _rows(timing: Timing, batch: int, relative: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for key in timing.rounds:
        runtime, config = key.split("/", 1)
        plain = timing.mean(f"{runtime}/{PLAIN}")
        mean = timing.mean(key)
        rel = relative.get(config, 1.0)
        speedup = plain / mean
        interval = ratio_interval(timing, f"{runtime}/{PLAIN}", key) if config != PLAIN else None
        rows.append(
            {
                "runtime": runtime,
                "batch": batch,
                "config": config,
                "mean_ms": mean * 1e3,
                "p50_ms": timing.percentile(key, 50) * 1e3,
                "p95_ms": timing.percentile(key, 95) * 1e3,
                "p99_ms": timing.percentile(key, 99) * 1e3,
                "images_per_s": 1.0 / mean,
                "speedup": speedup,
                "speedup_low": interval.low if interval else None,
                "speedup_high": interval.high if interval else None,
                "relative_macs": rel,
                "compute_speedup": 1.0 / rel,
                "efficiency": runtime_efficiency(speedup, rel) if config != PLAIN else math.nan,
            }
        )
    return rows


def _achieved(
    runtime: AdaptiveRuntime,
    runners: dict[str, OnnxAdaptiveRunner],
    costs: CostTable,
    x: torch.Tensor,
    y: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """Per configuration on the timed images: relative MACs, accuracy, exits equal across runtimes."""
    cal = runtime.policy
    assert isinstance(cal, CalibratedThreshold)
    x_dev = x.to(device_of(*runtime.stages))
    plain_accuracy = float((runtime.plain(x_dev).argmax(1).cpu() == y).float().mean())
    out = {PLAIN: {"relative_macs": 1.0, "accuracy": plain_accuracy}}
    for name, runner in runners.items():
        rt = runtime.with_policy(CalibratedThreshold(cal.calibration, runner.beta, cal.variant))
        on_device = rt.run_batched(x_dev)
        res = ExitResult(on_device.logits.cpu(), on_device.exit_index.cpu())
        ort = runner.run_batched(x.numpy())
        out[name] = {
            "beta": runner.beta,
            "relative_macs": float(costs.macs_for(res.exit_index).mean() / costs.backbone_macs),
            "accuracy": float((res.predictions == y).float().mean()),
            "same_exits_onnxruntime": float((ort.exit_index == res.exit_index.numpy()).mean()),
            "max_logit_difference": float(np.abs(ort.logits - res.logits.numpy()).max()),
            "exit_fractions": (
                np.bincount(res.exit_index.numpy(), minlength=len(costs.stage_macs)) / len(x)
            ).tolist(),
        }
    return out


def _measured_rows(
    runs: dict[str, Callable[[Any], object]],
    inputs: dict[str, Any],
    batch: int,
    relative: dict[str, float],
    rounds: int,
    max_efficiency: float,
) -> list[dict[str, Any]]:
    """One batch size's rows, measured again (up to `MEASURE_RETRIES` times) while a speedup is
    implausible for its compute; rows still implausible then carry `refused` and no figures."""

    def measure() -> list[dict[str, Any]]:
        timing = interleaved_timing(runs, inputs, reference=f"pytorch eager/{PLAIN}", rounds=rounds)
        return _rows(timing, batch, relative)

    def name(r: dict[str, Any]) -> str:
        return f"{r['runtime']}/{r['config']} at batch {batch}"

    def faults(rows: list[dict[str, Any]]) -> dict[str, str]:
        return {
            name(r): f"efficiency {r['efficiency']:.2f} > {max_efficiency:g}"
            for r in rows
            if not plausible(r["speedup"], r["relative_macs"], max_efficiency)
        }

    rows, refused = remeasured(measure, faults)
    for r in rows:
        why = refused.get(name(r))
        if why is not None:
            r["refused"] = f"{why} after {MEASURE_RETRIES} re-measurements"
            for key in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "images_per_s", "speedup", "efficiency"):
                r[key] = math.nan
    return rows


def markdown(r: dict[str, Any]) -> str:
    """runtimes.md: the setup, one row per runtime x batch x configuration, what each configuration achieved."""
    hw, sw = r["hardware"], r["software"]
    setup = (
        f"`{r['checkpoint']}` on {r['dataset']}; {r['rule']}, knee beta {r['knee_beta']:g} ({r['knee_source']}). "
        f"CPU: {hw['cpu']} ({hw['cores']} cores); PyTorch on {r.get('device', 'cpu')}, {r['threads']} threads; "
        f"onnxruntime on {r.get('ort_providers', ['CPUExecutionProvider'])[0]}, "
        f"{r['ort_threads']} thread(s) per graph session; batch 1 over {r['batch1_images']} images, larger "
        f"batches over {r['batched_images']}; {r['rounds']} interleaved rounds; torch {sw['torch']}, "
        f"onnxruntime {sw['onnxruntime']}. Speedup = the same runtime's plain backbone's mean time per image "
        "/ this row's; efficiency = speedup / compute speedup."
    )
    header = ["runtime", "batch", "configuration", *speed_header()]
    rows = [[row["runtime"], str(row["batch"]), row["config"], *speed_cells(row)] for row in r["rows"]]
    achieved = [
        f"{name} (beta {a['beta']:g}): {pct(a['relative_macs'], 1)} of the MACs, accuracy {pct(a['accuracy'])}, "
        f"exits {', '.join(f'{f:.3f}' for f in a['exit_fractions'])}; onnxruntime took the same exit on "
        f"{pct(a['same_exits_onnxruntime'])} of images (max logit difference {a['max_logit_difference']:.1e})."
        for name, a in r["achieved"].items()
        if name != PLAIN
    ]
    plain = f"plain: accuracy {pct(r['achieved'][PLAIN]['accuracy'])} on the timed images."
    return "\n".join([setup, "", markdown_table(header, rows), "", *[f"- {a}" for a in [plain, *achieved]]])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", type=Path, default=Path("runs/demo/checkpoint.pt"))
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/runtimes"))
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    ap.add_argument("--ort-threads", type=int, default=1, help="onnxruntime threads per graph session")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--images", type=int, default=300, help="test images timed at batch 1")
    ap.add_argument("--batched-images", type=int, default=2048, help="test images timed in larger batches")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--beta", type=float, help="the knee's beta (default: the run's results.json)")
    ap.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo")
    ap.add_argument("--data-dir")
    ap.add_argument("--device", type=device_argument, default="auto", help=f"{DEVICE_HELP} (default auto)")
    ap.add_argument("--readme", action="store_true", help="replace the README's runtimes block")
    ap.add_argument(
        "--max-efficiency",
        type=float,
        default=MAX_EFFICIENCY,
        help="a speedup above this many times the compute speedup is measured again, then refused",
    )
    ap.add_argument("--quick", action="store_true", help="100 / 512 images, 3 rounds: a smoke run")
    return ap


@torch.inference_mode()
def main() -> None:
    args = _parser().parse_args()
    if args.quick:
        args.images, args.batched_images, args.rounds = 100, 512, 3
    device = resolve_device(args.device)
    providers = onnx_providers(args.device, onnxruntime.get_available_providers(), strict=False)
    torch.set_num_threads(args.threads)
    model, info = deploy_info(args.checkpoint, data_dir=args.data_dir)
    model.to(device)
    knee, source = (
        (args.beta, "--beta") if args.beta is not None else knee_beta_or(args.checkpoint.parent, info.beta)
    )
    policy = CalibratedThreshold(info.calibration, knee, info.variant)
    runtime = AdaptiveRuntime(model, policy, check_inputs=False)
    costs = measure_costs(model)
    cfg = load_model(args.checkpoint)[2]
    dataset = cfg.dataset
    _, test = load_run_data(cfg, args.data_dir)  # the run's own data, as every CLI verb reads it
    n = min(len(test), max(args.images, args.batched_images))
    x_all, y_all = next(test.subset(torch.arange(n)).batches(n, shuffle=False))
    with tempfile.TemporaryDirectory(prefix="bofexits-runtimes-") as tmp:
        export_onnx(
            args.checkpoint,
            Path(tmp) / "export",
            exporter=args.onnx_exporter,
            beta=knee,
            data_dir=args.data_dir,
        )
        runners = {
            name: OnnxAdaptiveRunner(
                Path(tmp) / "export",
                threads=args.ort_threads,
                beta=beta,
                check_inputs=False,
                providers=providers,
            )
            for name, beta in _configs(knee).items()
        }
        achieved = _achieved(runtime, runners, costs, x_all, y_all)
        ort_providers = next(iter(runners.values())).backbone.session.get_providers()
        relative = {name: a["relative_macs"] for name, a in achieved.items()}
        rows = []
        for batch in args.batch_sizes:
            count = args.images if batch == 1 else args.batched_images
            xs = [x_all[i : i + batch] for i in range(0, min(count, n) - batch + 1, batch)]
            runs = _callables(runtime, runners, batch)
            on_device, arrays = [x.to(device) for x in xs], [x.numpy() for x in xs]
            inputs = {k: (on_device if k.startswith("pytorch") else arrays) for k in runs}
            rows += _measured_rows(runs, inputs, batch, relative, args.rounds, args.max_efficiency)
            print(f"batch {batch}: done", flush=True)
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": f"{dataset} test set, first {n} images",
        "rule": f"{info.variant} rule on {info.calibration.score}",
        "knee_beta": knee,
        "knee_source": source,
        "hardware": machine(),
        "software": versions(torch, onnxruntime, np),
        "device": describe_device(device),
        "ort_providers": ort_providers,
        "threads": args.threads,
        "ort_threads": args.ort_threads,
        "batch1_images": min(args.images, n),
        "batched_images": min(args.batched_images, n),
        "rounds": args.rounds,
        "onnx_exporter": args.onnx_exporter,
        "achieved": achieved,
        "rows": rows,
    }
    write_result(args.out, "runtimes", result, markdown(result), "runtimes" if args.readme else None)


if __name__ == "__main__":
    main()
