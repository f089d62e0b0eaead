"""One GPU check, under 4 minutes: the environment, the GPU tests, plain against adaptive timed on the GPU.

    python benchmarks/gpu_check.py [--out runs/gpu_check] [--checkpoint runs/demo/checkpoint.pt]
        [--beta B] [--images 200] [--batch 256] [--batches 8] [--rounds 3] [--compare 256]
        [--no-resnet] [--skip-tests] [--dry-run] [--require-gpu]

1. Prints the environment: torch, CUDA, cuDNN, the GPU, TF32 settings.
2. Runs the tests marked ``gpu`` (tests/inference/test_gpu.py: CUDA graphs equal eager, GPU
   routes as CPU up to near-threshold samples, at most one synchronisation per exit), with a
   timeout.
3. Times `CudaAdaptiveRuntime` against its plain backbone on the GPU, every configuration
   interleaved in the same rounds, each call followed by ``torch.cuda.synchronize()`` (what a
   caller reading the result waits for):
   batch 1 eager (plain eager vs adaptive eager) and with CUDA graphs (plain graph vs adaptive
   graph), and batch `--batch` (plain vs adaptive); the CPU-shaped `AdaptiveRuntime` run on
   the GPU ("previous") is timed beside them. Subjects: the demo network
   (`--checkpoint` if present, at the knee beta of its results.json, else 0.5; without a
   checkpoint an untrained vgg28 calibrated on random inputs, "timing only") and, when
   torchvision imports, ResNet-50 at 224x224 with random weights and BoF exits, calibrated on
   random inputs with the conditional rule at beta 0.5 ("timing only").
   Per row: mean ms per image, p50 / p95 of single calls, images/s, speedup (ratio of mean
   times against the plain backbone in the same mode), compute speedup (backbone MACs / mean
   counted MACs of what ran) and runtime efficiency (speedup / compute speedup). Per subject:
   on how many images the GPU took the same exit as the CPU runtime, and how many images
   had a score within --near (1e-3, relative) of a threshold: rounding, and cuDNN's TF32
   convolutions (on by default in torch), may route those either way; any other difference
   is a bug.
4. Writes gpu_check.json and gpu_check.md into --out.

Without CUDA it says so and runs the CPU parts on a tiny untrained network (as --dry-run does):
no GPU numbers, exit status 0 (1 with --require-gpu).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import fit_on_random, knee_beta_or, random_inputs, speed_cells, speed_header

from bofexits.config import ModelConfig
from bofexits.evaluation import timing as timing_module
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.points import runtime_efficiency
from bofexits.evaluation.timing import interleaved_timing
from bofexits.inference.gpu import CudaAdaptiveRuntime, near_threshold, threshold_rule
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold
from bofexits.reporting.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = ROOT / "tests" / "inference" / "test_gpu.py"


@dataclass
class Subject:
    """A network to time: on the CPU, with its policy, where its numbers come from, and its inputs."""

    name: str
    model: MultiExitNetwork
    policy: CalibratedThreshold
    note: str
    inputs: Callable[[int, int], torch.Tensor]  # (n, seed) -> (n, C, H, W) on the CPU


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_cores": os.cpu_count(),
        "device": str(device),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=props.total_memory / 2**30,
        )
    return env


def run_gpu_tests(timeout_s: float) -> dict[str, Any]:
    """``pytest -m gpu`` on tests/inference/test_gpu.py in a subprocess, with a timeout."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(TEST_FILE)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, output = -1, f"timed out after {timeout_s:g} s\n{exc.stdout or ''}"
    return {
        "command": " ".join(cmd),
        "returncode": rc,
        "seconds": time.perf_counter() - t0,
        "tail": output[-3000:],
    }


def _random_inputs(shape: tuple[int, ...]) -> Callable[[int, int], torch.Tensor]:
    return lambda n, seed: random_inputs(shape, n, seed)


def demo_subject(checkpoint: Path, beta: float | None, device: torch.device) -> Subject:
    """The demo network from its checkpoint (test images when on disk), else an untrained vgg28."""
    if not checkpoint.is_file():
        model = build_model(ModelConfig()).eval()
        cal = fit_on_random(model, 512, device)
        b = 0.5 if beta is None else beta
        note = (
            f"untrained vgg28 ({checkpoint} not found), conditional rule fitted on random inputs: timing only"
        )
        return Subject(
            "demo", model, CalibratedThreshold(cal, b, "conditional"), note, _random_inputs(model.input_shape)
        )
    from bofexits.training.checkpoint import load_checkpoint, load_model

    model, calibrations, cfg = load_model(checkpoint)
    tuned = load_checkpoint(checkpoint).get("tuned") or {}
    score, variant = tuned.get("score") or cfg.score, tuned.get("variant") or cfg.variant
    b, source = (beta, "--beta") if beta is not None else knee_beta_or(checkpoint.parent, 0.5)
    inputs, what = _random_inputs(model.input_shape), "random inputs"
    try:
        from bofexits.data.registry import load_dataset

        _, test = load_dataset(cfg.dataset, cfg.data_dir, download=False)
        images, _ = next(test.batches(len(test), shuffle=False))

        def inputs(n: int, seed: int) -> torch.Tensor:
            return images[torch.randint(len(images), (n,), generator=torch.Generator().manual_seed(seed))]

        what = f"{cfg.dataset} test images"
    except Exception:  # noqa: BLE001 - no data on this machine: time on random inputs, and say so
        pass
    note = f"{checkpoint}, {variant} rule on {score} at beta {b:g} ({source}), {what}"
    return Subject("demo", model, CalibratedThreshold(calibrations[score], b, variant), note, inputs)


def resnet_subject(device: torch.device) -> Subject:
    """torchvision ResNet-50 at 224x224, random weights, BoF exits, conditional rule at beta 0.5."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(backbone="tv:resnet50", num_classes=1000, in_channels=3, image_size=224)
    ).eval()
    cal = fit_on_random(model, 384, device, chunk=64)
    note = "torchvision resnet50 at 224x224, random weights, conditional rule fitted on random inputs: timing only"
    return Subject(
        "resnet50", model, CalibratedThreshold(cal, 0.5, "conditional"), note, _random_inputs((3, 224, 224))
    )


def tiny_subject() -> Subject:
    """A small untrained vgg28 for the dry run (seconds on two CPU cores)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(widths=[4, 8, 8, 16], codewords=8)).eval()
    cal = fit_on_random(model, 256, torch.device("cpu"))
    note = "tiny untrained vgg28 on random inputs: dry run, timing only"
    return Subject(
        "tiny", model, CalibratedThreshold(cal, 0.5, "conditional"), note, _random_inputs(model.input_shape)
    )


def _synced(fn: Callable[[torch.Tensor], object], device: torch.device) -> Callable[[torch.Tensor], object]:
    """`fn` followed by a wait for the device, unless `interleaved_timing` already waits (its `synchronizer`)."""
    if device.type != "cuda" or hasattr(timing_module, "synchronizer"):
        return fn

    def run(x: torch.Tensor) -> object:
        out = fn(x)
        torch.cuda.synchronize(device)
        return out

    return run


# configuration -> the plain configuration its speedup is taken against
PAIRS = {
    "adaptive eager": "plain eager",
    "previous eager": "plain eager",
    "adaptive graph": "plain graph",
    "adaptive": "plain",
    "previous": "plain",
}


@torch.inference_mode()
def check_subject(subject: Subject, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Agreement with the CPU runtime, then the timing rows of one subject."""
    model = copy.deepcopy(subject.model).to(device)
    policy = subject.policy
    eager = CudaAdaptiveRuntime(model, policy, check_inputs=False, graphs=False)
    graphed = CudaAdaptiveRuntime(model, policy, check_inputs=False)
    previous = AdaptiveRuntime(model, policy, check_inputs=False)
    costs = measure_costs(subject.model)
    out: dict[str, Any] = {"name": subject.name, "note": subject.note, "policy": policy.describe()}
    out["agreement"] = _agreement(subject, eager, graphed, args.compare, args.near)

    singles = [x.to(device) for x in subject.inputs(args.images, 1).split(1)]
    batches = [x.to(device) for x in subject.inputs(args.batch * args.batches, 2).split(args.batch)]
    exits = torch.cat([eager.run_batched(x).exit_index.cpu() for x in batches])
    single_exits = torch.cat([eager(x).exit_index.cpu() for x in singles])
    rel = {1: float(costs.macs_for(single_exits).mean()) / costs.backbone_macs}
    rel[args.batch] = float(costs.macs_for(exits).mean()) / costs.backbone_macs
    out["relative_macs"] = {str(k): v for k, v in rel.items()}
    out["exit_fractions"] = (torch.bincount(exits, minlength=model.num_exits).double() / len(exits)).tolist()
    runs_1 = {
        "plain eager": eager.plain,
        "adaptive eager": eager.run_single,
        "previous eager": previous.run_single,
    }
    if graphed.graphs:
        runs_1 |= {"plain graph": graphed.plain, "adaptive graph": graphed.run_single}
    runs_b = {"plain": eager.plain, "adaptive": eager.run_batched, "previous": previous.run_batched}
    rows = []
    for batch, runs, xs in ((1, runs_1, singles), (args.batch, runs_b, batches)):
        synced = {k: _synced(fn, device) for k, fn in runs.items()}
        reference = next(iter(runs))
        timing = interleaved_timing(synced, xs, reference=reference, rounds=args.rounds)
        for name in runs:
            mean = timing.mean(name)
            plain = timing.mean(PAIRS.get(name, name))
            speedup = plain / mean
            r = rel[batch] if name in PAIRS else 1.0
            rows.append(
                {
                    "batch": batch,
                    "config": name,
                    "mean_ms": mean * 1e3,
                    "p50_ms": timing.percentile(name, 50) * 1e3,
                    "p95_ms": timing.percentile(name, 95) * 1e3,
                    "images_per_s": 1.0 / mean,
                    "speedup": speedup,
                    "compute_speedup": 1.0 / r,
                    "efficiency": runtime_efficiency(speedup, r) if name in PAIRS else math.nan,
                }
            )
    out["rows"] = rows
    return out


def _agreement(
    subject: Subject, eager: CudaAdaptiveRuntime, graphed: CudaAdaptiveRuntime, n: int, tol: float
) -> dict[str, Any]:
    """Exits taken on this device (batched, and batch 1 as run: graphs on CUDA) against the CPU runtime."""
    x = subject.inputs(n, 3)
    cpu = AdaptiveRuntime(subject.model, subject.policy)(x)
    device = eager.device
    batched = eager.run_batched(x.to(device))
    runs = [graphed.run_single(x[i : i + 1].to(device)) for i in range(n)]
    single = torch.cat([logits.cpu() for logits, _ in runs])
    single_exits = torch.tensor([index for _, index in runs])
    rule = threshold_rule(subject.policy, subject.model.num_exits - 1)
    assert rule is not None
    near = near_threshold(subject.model(x), rule, cpu.exit_index, tol)
    differ_b = batched.exit_index.cpu() != cpu.exit_index
    differ_1 = single_exits != cpu.exit_index
    return {
        "images": n,
        "near_tolerance": tol,
        "same_exits_batched": int((~differ_b).sum()),
        "same_exits_batch1": int((~differ_1).sum()),
        "near_threshold": int(near.sum()),
        "unexplained_differences": int(((differ_b | differ_1) & ~near).sum()),
        "same_predictions_batched": int((batched.predictions.cpu() == cpu.predictions).sum()),
        "same_predictions_batch1": int((single.argmax(1) == cpu.predictions).sum()),
        "max_logit_difference_same_exit": float((batched.logits.cpu() - cpu.logits)[~differ_b].abs().max())
        if bool((~differ_b).any())
        else 0.0,
    }


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    where = env.get("gpu") or "CPU (dry run: no GPU numbers)"
    lines = [
        f"# GPU check: {where}",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, TF32 matmul {env['tf32_matmul']} / "
        f"cuDNN {env['tf32_cudnn']}; {result['rounds']} interleaved rounds, each call synchronised. Speedup: the "
        "plain backbone's mean time per image in the same mode (eager or graph) / this row's; efficiency = "
        'speedup / compute speedup. "previous" is the CPU-shaped AdaptiveRuntime on the same device.',
        "",
    ]
    tests = result.get("tests")
    if tests is not None:
        verdict = "passed" if tests["returncode"] == 0 else f"FAILED (exit {tests['returncode']})"
        last = tests["tail"].strip().splitlines()[-1:] or [""]
        lines += [f"GPU tests {verdict} in {tests['seconds']:.0f} s: {last[0]}", ""]
    header = ["subject", "batch", "configuration", *speed_header((50, 95))]
    rows = []
    for s in result["subjects"]:
        if "error" in s:
            lines.append(f"- {s['name']}: {s['error']}")
            continue
        a = s["agreement"]
        lines.append(
            f"- {s['name']}: {s['note']}. Same exit as the CPU runtime on {a['same_exits_batched']}/{a['images']} "
            f"images batched, {a['same_exits_batch1']}/{a['images']} at batch 1; {a['near_threshold']} images "
            f"within {a['near_tolerance']:g} of a threshold, {a['unexplained_differences']} differences not "
            "explained by that."
        )
        rows += [[s["name"], str(r["batch"]), r["config"], *speed_cells(r, (50, 95))] for r in s["rows"]]
    return "\n".join([*lines, "", markdown_table(header, rows), ""])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint.pt"))
    ap.add_argument("--beta", type=float, help="the demo network's beta (default: its knee, else 0.5)")
    ap.add_argument("--images", type=int, default=200, help="single images timed at batch 1")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=8, help="batches timed per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", type=int, default=256, help="images compared with the CPU runtime")
    ap.add_argument(
        "--near",
        type=float,
        default=1e-3,
        help="a score this close to a threshold (relative) may route either way",
    )
    ap.add_argument("--tests-timeout", type=float, default=150.0)
    ap.add_argument("--no-resnet", action="store_true", help="skip torchvision ResNet-50")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the gpu-marked tests")
    ap.add_argument("--dry-run", action="store_true", help="CPU only, tiny network, few images")
    ap.add_argument("--require-gpu", action="store_true", help="exit 1 when no CUDA device is found")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda:
        if not args.dry_run:
            print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to time on a GPU.")
            if args.require_gpu:
                return 1
            print("gpu_check: running the CPU parts on a tiny untrained network instead (--dry-run).")
        args.images, args.batch, args.batches = min(args.images, 8), min(args.batch, 16), min(args.batches, 2)
        args.rounds, args.compare = min(args.rounds, 2), min(args.compare, 16)
    device = torch.device("cuda" if cuda else "cpu")
    t0 = time.perf_counter()
    env = environment(device)
    print(json.dumps(env, indent=2), flush=True)
    result: dict[str, Any] = {"environment": env, "dry_run": not cuda, "rounds": args.rounds, "subjects": []}
    if not args.skip_tests:
        result["tests"] = run_gpu_tests(args.tests_timeout)
        print(result["tests"]["tail"][-600:], flush=True)
    makers: list[tuple[str, Callable[[], Subject]]] = []
    if cuda:
        makers.append(("demo", lambda: demo_subject(args.checkpoint, args.beta, device)))
        if not args.no_resnet:
            makers.append(("resnet50", lambda: resnet_subject(device)))
    else:
        makers.append(("tiny", tiny_subject))
    for name, make in makers:
        start = time.perf_counter()
        try:
            if name == "resnet50":
                import torchvision  # noqa: F401 - only to say why ResNet-50 is skipped
            subject = make()
            if name == "resnet50":  # fewer, slower images: keep the whole check under 4 minutes
                args.images, args.batches, args.compare = min(args.images, 100), min(args.batches, 4), 32
            entry = check_subject(subject, device, args)
        except ImportError as exc:
            entry = {"name": name, "error": f"skipped: {exc}"}
        except Exception as exc:  # noqa: BLE001 - one failing subject must not lose the others' numbers
            entry = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
        entry["seconds"] = time.perf_counter() - start
        result["subjects"].append(entry)
        print(f"{name}: done in {entry['seconds']:.0f} s", flush=True)
    result["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    print(f"gpu_check: {result['seconds']:.0f} s; wrote {args.out / 'gpu_check.json'} and gpu_check.md")
    return 1 if failures(result) else 0


def failures(result: dict[str, Any]) -> list[str]:
    """What went wrong: failed GPU tests, subjects that raised (a missing torchvision is a skip, not a failure)."""
    out = []
    tests = result.get("tests")
    if tests is not None and tests["returncode"] not in (0, 5):  # 5: no test collected (all deselected)
        out.append(f"GPU tests exited {tests['returncode']}")
    out += [
        f"{s['name']}: {s['error']}"
        for s in result["subjects"]
        if not s.get("error", "skipped").startswith("skipped")
    ]
    return out


if __name__ == "__main__":
    sys.exit(main())
