"""Runtime efficiency against model size: the demo network and torchvision classifiers at 224x224.

    .venv/bin/python benchmarks/scaling.py [--device auto] [--threads 2] [--out runs/benchmarks/scaling]
        [--models demo tv:resnet18 tv:resnet50 tv:mobilenet_v3_large tv:efficientnet_b0]
        [--quick] [--readme]

Needs torchvision for the `tv:` rows (`pip install 'bofexits[vision]'`); without it those rows
are skipped and the table says so. Per backbone, runtime (PyTorch eager on the device) and
batch size (1 and 32 on a CPU; 1 and 256 on a GPU), the plain backbone and adaptive
inference are timed interleaved in the same rounds on the same images (`AdaptiveRuntime` and
its like-for-like `plain`), and the table gives mean ms per image, speedup, compute speedup
(backbone MACs / mean MACs of what ran), runtime efficiency (their ratio), the exits' share of
the backbone's MACs, and each exit head's batch-1 time as a share of the stage it follows.

The torchvision backbones have random weights and random inputs: **timing only**, no
accuracy. The conditional rule is calibrated on a few hundred random inputs, so beta fixes
the exit distribution (beta 0.5: about half the samples leave at exit 1, half of the rest at
exit 2, ...). The demo network is the trained `make demo` checkpoint on Fashion-MNIST test
images at its knee beta, when runs/demo has one.

Writes scaling.json, scaling.md and scaling.png (efficiency against backbone GMACs) into --out;
--readme replaces the README block between `<!-- scaling:begin -->` and `<!-- scaling:end -->`.
Default sizes finish in well under 20 minutes on a 2-core CPU; --quick in under 5.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import fit_on_random, machine, runtime_parts, time_parts, write_result

from bofexits.config import ModelConfig
from bofexits.errors import BofexitsError
from bofexits.evaluation.cost import CostTable, measure_costs
from bofexits.evaluation.points import runtime_efficiency
from bofexits.evaluation.timing import interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import CalibratedThreshold
from bofexits.reporting.format import times
from bofexits.reporting.tables import markdown_table

DEFAULT_MODELS = ["demo", "tv:resnet18", "tv:resnet50", "tv:mobilenet_v3_large", "tv:efficientnet_b0"]


@dataclass
class Network:
    """One backbone to time: the network, its policy, the images to time on, and what it is."""

    name: str
    model: MultiExitNetwork
    policy: CalibratedThreshold
    images: torch.Tensor
    source: str


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"scaling: --device {name} asked for, but no CUDA GPU is visible; use cpu or auto")
    return torch.device(name)


def _demo(count: int, beta: float | None) -> Network | None:
    """The `make demo` checkpoint at its knee on Fashion-MNIST test images, if runs/demo has one."""
    from bofexits.data.registry import load_dataset
    from bofexits.reporting.report import knee_beta
    from bofexits.training.checkpoint import load_model

    ckpt = Path("runs/demo/checkpoint.pt")
    if not ckpt.exists():
        return None
    model, calibrations, cfg = load_model(ckpt)
    knee = knee_beta(ckpt.parent)
    beta = beta if beta is not None else (knee if knee is not None else 0.5)
    _, test = load_dataset(cfg.dataset, cfg.data_dir)
    x, _ = next(test.subset(torch.arange(min(count, len(test)))).batches(count, shuffle=False))
    policy = CalibratedThreshold(calibrations[cfg.score], float(beta), cfg.variant)
    return Network("demo (vgg28, 28x28, trained)", model, policy, x, f"runs/demo, beta {beta:g}")


def _torchvision(name: str, count: int, beta: float, size: int, calibrate: int) -> Network:
    """A `tv:` backbone with random weights and BoF exits, calibrated on random inputs."""
    cfg = ModelConfig(backbone=name, num_classes=1000, in_channels=3, image_size=size)
    model = build_model(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    calibration = fit_on_random(model, calibrate, chunk=32)
    policy = CalibratedThreshold(calibration, beta, "conditional")
    x = torch.randn(count, 3, size, size, generator=gen)
    return Network(f"{name} ({size}x{size}, timing only)", model, policy, x, "random weights and inputs")


def _head_shares(
    runtime: AdaptiveRuntime, costs: CostTable, x: torch.Tensor, reps: int, rounds: int
) -> list[float]:
    """Each exit head's batch-1 time over the batch-1 time of the stage it follows.

    From the interleaved part timer of where_time_goes.py: every stage and head on the input it
    sees in the runtime, all timed in the same rounds (medians over rounds).
    """
    with torch.inference_mode():
        rows = time_parts(runtime_parts(runtime, runtime.policy, costs, x), 1, reps, rounds)
    us = {r["part"]: r["us_per_image"] for r in rows}
    return [us[f"exit {i + 1} head"] / us[f"stage {i + 1}"] for i in range(runtime.exits.num_exits)]


def _rows(
    net: Network, device: torch.device, batches: list[int], rounds: int, reps: int
) -> list[dict[str, Any]]:
    model = net.model.to(device)
    runtime = AdaptiveRuntime(model, net.policy, check_inputs=False)
    costs: CostTable = measure_costs(net.model)
    x_all = net.images.to(device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        exit_index = runtime.run_batched(x_all).exit_index.cpu()
    relative = float(costs.macs_for(exit_index).mean() / costs.backbone_macs)
    fractions = (
        torch.bincount(exit_index, minlength=len(costs.stage_macs)).float() / len(exit_index)
    ).tolist()
    shares = _head_shares(runtime, costs, x_all[:1], reps, rounds)
    rows = []
    for batch in batches:
        xs = [x_all[i : i + batch] for i in range(0, len(x_all) - batch + 1, batch)] or [x_all[:batch]]
        adaptive = runtime.run_single if batch == 1 else runtime.run_batched

        def plain(x: torch.Tensor) -> object:
            out = runtime.plain(x)
            sync()
            return out

        def adapt(x: torch.Tensor, adaptive: Callable[[torch.Tensor], object] = adaptive) -> object:
            out = adaptive(x)
            sync()
            return out

        with torch.inference_mode():
            timing = interleaved_timing(
                {"plain": plain, "adaptive": adapt}, xs, reference="plain", rounds=rounds
            )
        speedup = timing.mean_speedup("adaptive")
        rows.append(
            {
                "backbone": net.name,
                "source": net.source,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "batch": batch,
                "images": sum(int(x.shape[0]) for x in xs),
                "backbone_gmacs": costs.backbone_macs / 1e9,
                "exits_share_of_macs": sum(costs.exit_macs) / costs.backbone_macs,
                "exit_head_share_of_stage_time_batch1": shares,
                "beta": net.policy.beta,
                "exit_fractions": fractions,
                "relative_macs": relative,
                "plain_mean_ms": timing.mean("plain") * 1e3,
                "adaptive_mean_ms": timing.mean("adaptive") * 1e3,
                "adaptive_p95_ms": timing.percentile("adaptive", 95) * 1e3,
                "speedup": speedup,
                "compute_speedup": 1 / relative,
                "efficiency": runtime_efficiency(speedup, relative),
            }
        )
    net.model.to("cpu")
    return rows


def markdown(result: dict[str, Any]) -> str:
    """scaling.md: setup, one row per backbone x batch size, skipped models."""
    setup = (
        f"PyTorch eager on {result['device']} ({result['cpu']}, {result['cores']} cores), {result['threads']} "
        f"threads; torch {result['torch']}; {result['rounds']} interleaved rounds. Demo rows: the checkpoint's rule "
        "at its knee; torchvision rows: the conditional rule on max-softmax; speedup = the plain "
        "backbone's mean time per image / adaptive (same runtime, same images, same "
        "rounds); efficiency = speedup / compute speedup. torchvision rows: random weights and inputs, "
        "timing only."
    )
    header = ["backbone", "GMACs", "exits % of MACs", "exit head / stage time (b1)", "batch", "beta"]
    header += ["exit fractions", "plain ms", "adaptive ms (p95)", "speedup", "compute speedup", "efficiency"]
    rows = [
        [
            r["backbone"],
            f"{r['backbone_gmacs']:.3f}",
            f"{100 * r['exits_share_of_macs']:.2f}",
            " / ".join(f"{100 * s:.0f}%" for s in r["exit_head_share_of_stage_time_batch1"]),
            str(r["batch"]),
            f"{r['beta']:g}",
            " / ".join(f"{f:.2f}" for f in r["exit_fractions"]),
            f"{r['plain_mean_ms']:.3f}",
            f"{r['adaptive_mean_ms']:.3f} ({r['adaptive_p95_ms']:.3f})",
            times(r["speedup"]),
            times(r["compute_speedup"]),
            f"{r['efficiency']:.2f}",
        ]
        for r in result["rows"]
    ]
    lines = [setup, "", markdown_table(header, rows)]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()) + "."]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Efficiency against backbone GMACs, one line per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for batch in sorted({r["batch"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["batch"] == batch), key=lambda r: r["backbone_gmacs"])
        ax.plot(
            [r["backbone_gmacs"] for r in rows], [r["efficiency"] for r in rows], "o-", label=f"batch {batch}"
        )
        for r in rows:
            ax.annotate(r["backbone"].split(" ")[0], (r["backbone_gmacs"], r["efficiency"]), fontsize=7)
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("backbone GMACs (log)")
    ax.set_ylabel("runtime efficiency")
    ax.set_title(f"Runtime efficiency vs model size ({result['device']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda[:N]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.5, help="beta for the torchvision backbones")
    ap.add_argument("--demo-beta", type=float, help="beta for the demo network (default: its knee)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=64, help="timed images per backbone")
    ap.add_argument("--calibrate", type=int, default=256, help="random inputs the rule is calibrated on")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--head-reps", type=int, default=20, help="calls per stage / exit head for their times")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/scaling"))
    ap.add_argument(
        "--quick", action="store_true", help="16 images, 64 calibration inputs, 2 rounds, 112x112"
    )
    ap.add_argument("--readme", action="store_true", help="replace the README's scaling block")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.quick:
        args.images, args.calibrate, args.rounds, args.head_reps = 16, 64, 2, 5
        args.image_size = min(args.image_size, 112)
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    batches = [1, 256] if device.type == "cuda" else [1, 32]
    count = max(args.images, max(batches)) if device.type == "cuda" else max(args.images, 32)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in args.models:
        started = time.time()
        try:
            net = (
                _demo(max(count, 256), args.demo_beta)
                if name == "demo"
                else _torchvision(name, count, args.beta, args.image_size, args.calibrate)
            )
        except BofexitsError as exc:  # torchvision missing, unknown name: say why, go on
            skipped[name] = str(exc).split(";")[0]
            continue
        if net is None:
            skipped[name] = "no runs/demo/checkpoint.pt (run make demo)"
            continue
        rows += _rows(net, device, batches, args.rounds, args.head_reps)
        print(f"{name}: {time.time() - started:.0f} s", flush=True)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        **machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "rounds": args.rounds,
        "image_size": args.image_size,
        "rows": rows,
        "skipped": skipped,
    }
    write_result(args.out, "scaling", result, markdown(result), "scaling" if args.readme else None)
    if rows:
        plot(result, args.out / "scaling.png")
    return result


if __name__ == "__main__":
    main()
