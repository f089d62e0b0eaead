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
from pathlib import Path

import torch
from _common import runtime_parts, time_parts

from bofexits import AdaptiveRuntime, FullNetwork, ModelConfig, build_model, load_model, measure_costs
from bofexits.devices import DEVICE_HELP, describe_device, device_argument, resolve_device
from bofexits.policies import CalibratedThreshold, ExitPolicy, GlobalThreshold
from bofexits.reporting.format import pct


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
        rows += time_parts(runtime_parts(runtime, policy, costs, x), batch, reps, args.rounds)
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
