"""Where the time goes: each stage, each exit head and the policy decision, at batch 1 and 256.

    .venv/bin/python benchmarks/where_time_goes.py [CHECKPOINT] [--threads N] [--out DIR]

Uses a trained checkpoint when given (default runs/demo/checkpoint.pt if present), else a
freshly initialised reference network (timing does not depend on the weights). Parts are
timed interleaved, several rounds, and reported as medians in microseconds per image,
next to their counted MACs. Writes where_time_goes.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bofexits import AdaptiveRuntime, FullNetwork, ModelConfig, build_model, load_model, measure_costs
from bofexits.policies import CalibratedThreshold, ExitPolicy, GlobalThreshold


def _median_us(fn, x: torch.Tensor, reps: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(x)
        times.append((time.perf_counter() - t0) / reps / x.shape[0] * 1e6)
    return statistics.median(times)


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", default="runs/demo/checkpoint.pt")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if Path(args.checkpoint).exists():
        model, calibrations, cfg = load_model(args.checkpoint)
        source = args.checkpoint
        policy: ExitPolicy = CalibratedThreshold(calibrations[cfg.score], 0.5, cfg.variant)
    else:
        model, source = build_model(ModelConfig()).eval(), "untrained reference network"
        policy = GlobalThreshold(0.9)
    costs = measure_costs(model)
    runtime = AdaptiveRuntime(model, FullNetwork())  # the inference forms the runtime executes
    stages, exits = runtime.stages, runtime.exits
    rows = []
    for batch, reps in ((1, 400), (256, 4)):
        x = torch.randn(batch, *model.input_shape)
        maps, state = [], None
        h = x
        for i, stage in enumerate(stages):
            rows.append(
                {
                    "part": f"stage {i + 1}",
                    "batch": batch,
                    "macs": costs.stage_macs[i],
                    "us_per_image": _median_us(stage, h, reps, args.rounds),
                }
            )
            h = stage(h)
            maps.append(h)
        for i in range(exits.num_exits):
            logits, new_state = exits.step(i, maps[i], state)
            rows.append(
                {
                    "part": f"exit {i + 1} head",
                    "batch": batch,
                    "macs": costs.exit_macs[i],
                    "us_per_image": _median_us(
                        lambda m, i=i, s=state: exits.step(i, m, s), maps[i], reps, args.rounds
                    ),
                }
            )
            rows.append(
                {
                    "part": f"exit {i + 1} decision ({policy.name} policy)",
                    "batch": batch,
                    "macs": 0,
                    "us_per_image": _median_us(
                        (lambda lg, i=i: policy.stop_one(i, lg, None))
                        if batch == 1
                        else (lambda lg, i=i: policy.stop(i, lg, None)),
                        logits,
                        reps,
                        args.rounds,
                    ),
                }
            )
            state = new_state
        plain = runtime.plain_backbone()
        rows.append(
            {
                "part": "plain backbone",
                "batch": batch,
                "macs": costs.backbone_macs,
                "us_per_image": _median_us(plain, x, reps, args.rounds),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"source": source, "threads": args.threads, "torch": torch.__version__, "rows": rows}
    (args.out / "where_time_goes.json").write_text(json.dumps(result, indent=2))
    print(f"{'part':<40} {'batch':>5} {'MACs':>10} {'us/image':>9}")
    for r in rows:
        print(f"{r['part']:<40} {r['batch']:>5} {r['macs']:>10} {r['us_per_image']:>9.1f}")


if __name__ == "__main__":
    main()
