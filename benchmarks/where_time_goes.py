"""Where the time goes: each stage, each exit head and the policy decision, at batch 1 and 256.

    .venv/bin/python benchmarks/where_time_goes.py [CHECKPOINT] [--threads N] [--out DIR]
        [--device auto|cpu|cuda[:N]]

Uses a trained checkpoint when given (default runs/demo/checkpoint.pt if present), else a
freshly initialised reference network (timing does not depend on the weights). All parts of
one batch size are timed interleaved with the plain backbone in the same rounds (the library's
`interleaved_timing`), and reported as medians over rounds in microseconds per image, next to
their counted MACs and their share of the backbone's time. Writes where_time_goes.json.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bofexits import AdaptiveRuntime, FullNetwork, ModelConfig, build_model, load_model, measure_costs
from bofexits.devices import DEVICE_HELP, describe_device, device_argument, resolve_device
from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.timing import interleaved_timing
from bofexits.policies import CalibratedThreshold, ExitPolicy, GlobalThreshold
from bofexits.reporting.format import pct

PLAIN = "plain backbone"


@dataclass
class Part:
    """One piece of adaptive inference, called on the input it sees in the runtime."""

    name: str
    macs: int
    fn: Callable[[Any], object]
    x: Any


def _parts(runtime: AdaptiveRuntime, policy: ExitPolicy, costs: CostTable, x: torch.Tensor) -> list[Part]:
    """Every stage, exit head and decision on the features the runtime would feed it, and the backbone."""
    exits = runtime.exits
    if x.shape[0] == 1:
        stages, h = runtime.stages, x
    else:  # batches run the channels-last stages, as `run_batched` does
        stages, h = runtime.batch_stages, x.contiguous(memory_format=runtime.memory_format)
    parts, maps = [], []
    for i, stage in enumerate(stages):
        parts.append(Part(f"stage {i + 1}", costs.stage_macs[i], stage, h))
        h = stage(h)
        maps.append(h)
    state = None
    for i in range(exits.num_exits):
        logits, new_state = exits.step(i, maps[i], state)
        parts.append(
            Part(
                f"exit {i + 1} head", costs.exit_macs[i], lambda m, i=i, s=state: exits.step(i, m, s), maps[i]
            )
        )
        decide = (
            (lambda lg, i=i: policy.stop_one(i, lg, None))
            if x.shape[0] == 1
            else (lambda lg, i=i: policy.stop(i, lg, None))
        )
        parts.append(Part(f"exit {i + 1} decision ({policy.name} policy)", 0, decide, logits))
        state = new_state
    return [*parts, Part(PLAIN, costs.backbone_macs, runtime.plain, x)]


def _time_parts(parts: list[Part], batch: int, reps: int, rounds: int) -> list[dict[str, Any]]:
    """Median µs per image of each part, all parts interleaved in the same rounds."""
    timing = interleaved_timing(
        {p.name: p.fn for p in parts}, {p.name: [p.x] * reps for p in parts}, reference=PLAIN, rounds=rounds
    )
    plain = timing.median(PLAIN)
    return [
        {
            "part": p.name,
            "batch": batch,
            "macs": p.macs,
            "us_per_image": timing.median(p.name) * 1e6,
            "mean_us_per_image": timing.mean(p.name) * 1e6,
            "share_of_backbone_time": timing.median(p.name) / plain,
        }
        for p in parts
    ]


def _network(checkpoint: str) -> tuple[torch.nn.Module, ExitPolicy, str]:
    if Path(checkpoint).exists():
        model, calibrations, cfg = load_model(checkpoint)
        return model, CalibratedThreshold(calibrations[cfg.score], 0.5, cfg.variant), checkpoint
    return build_model(ModelConfig()).eval(), GlobalThreshold(0.9), "untrained reference network"


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", default="runs/demo/checkpoint.pt")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    ap.add_argument("--device", type=device_argument, default="auto", help=f"{DEVICE_HELP} (default auto)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    model, policy, source = _network(args.checkpoint)
    model.to(device)
    costs = measure_costs(model)
    runtime = AdaptiveRuntime(model, FullNetwork())  # the inference forms the runtime executes
    rows = []
    for batch, reps in ((1, 400), (32, 30), (256, 4)):
        x = torch.randn(batch, *model.input_shape, device=device)
        rows += _time_parts(_parts(runtime, policy, costs, x), batch, reps, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "source": source,
        "device": describe_device(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    (args.out / "where_time_goes.json").write_text(json.dumps(result, indent=2))
    print(f"{'part':<40} {'batch':>5} {'MACs':>10} {'us/image':>9} {'of backbone':>11}")
    for r in rows:
        share = pct(r["share_of_backbone_time"], 1)
        print(f"{r['part']:<40} {r['batch']:>5} {r['macs']:>10} {r['us_per_image']:>9.1f} {share:>11}")


if __name__ == "__main__":
    main()
