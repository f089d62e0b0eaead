"""The fused exit head against the general one, on the same weights: accuracy exit by exit, and time.

    .venv/bin/python benchmarks/fused_heads.py CHECKPOINT [--threads 2] [--images 300] [--rounds 10]
        [--data-dir DIR] [--out runs/benchmarks/fused_heads]

With one RBF width per exit (`--shared-width`, or per-codeword widths that happen to be equal)
the ||x||^2 term cancels in the softmax and `FrozenBoFExits` runs each exit as (avg-pool) addmm,
softmax, addmm (docs/decisions.md, "Fused exit heads"). `fuse=False` keeps the general form
(addmm, squared norm, addcmul, softmax, addmm) on the same weights, so the two are compared on
identical networks:

* accuracy of every exit on the whole test set: the training-time exits (the reference), the
  fused and general inference forms and the fused graph form (what ONNX export traces), with the
  number of test images whose class differs from the reference and the largest logit difference;
* batch-1 time per image (interleaved rounds, the library's `interleaved_timing`): each exit head
  alone, and the whole runtime at beta 1 (every image through every exit, `run_single`) with each
  form, against the plain backbone (`AdaptiveRuntime.plain`), mean with p50 / p95.

A checkpoint with per-codeword widths that differ runs the general form in both columns (the
script says so). Writes fused_heads.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from bofexits.data.registry import load_dataset
from bofexits.evaluation.timing import cpu_model, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.exits import BoFExits
from bofexits.models.folded import FrozenBoFExits
from bofexits.policies import CalibratedThreshold
from bofexits.training.checkpoint import load_model

PLAIN = "plain backbone"


@torch.inference_mode()
def accuracy(model: Any, test: Any, shapes: list[tuple[int, ...]], batch: int = 500) -> dict[str, Any]:
    """Per-exit accuracy of the reference exits and of each inference form, and their disagreements."""
    exits: BoFExits = model.exits
    forms = {
        "fused": FrozenBoFExits(exits, shapes),
        "general": FrozenBoFExits(exits, shapes, fuse=False),
    }
    forms["fused graph form"] = forms["fused"].graph_form()
    correct = {name: [0] * (exits.num_exits + 1) for name in ("reference", *forms)}
    differ = {name: [0] * exits.num_exits for name in forms}
    max_diff = {name: 0.0 for name in forms}
    n = 0
    for x, y in test.batches(batch, shuffle=False):
        maps, final = model.features(x)
        ref = exits(maps)
        for i, logits in enumerate([*ref, final]):
            correct["reference"][i] += int((logits.argmax(1) == y).sum())
        for name, form in forms.items():
            state = None
            for i, m in enumerate(maps):
                logits, state = form.step(i, m, state)
                correct[name][i] += int((logits.argmax(1) == y).sum())
                differ[name][i] += int((logits.argmax(1) != ref[i].argmax(1)).sum())
                max_diff[name] = max(max_diff[name], float((logits - ref[i]).abs().max()))
            correct[name][-1] += int((final.argmax(1) == y).sum())
        n += len(y)
    return {
        "images": n,
        "accuracy": {name: [c / n for c in counts] for name, counts in correct.items()},
        "classes_differing_from_reference": differ,
        "max_logit_difference": max_diff,
        "kinds": [b.kind for b in forms["fused"]._bof],  # type: ignore[attr-defined]
    }


@torch.inference_mode()
def timing(model: Any, calibration: Any, variant: str, x: torch.Tensor, rounds: int) -> dict[str, Any]:
    """Batch-1 time per image: each head in both forms, and beta 1 with each form, vs the plain backbone."""
    shapes = list(model.feature_shapes)
    rt = AdaptiveRuntime(model, CalibratedThreshold(calibration, 1.0, variant), check_inputs=False)
    fused = FrozenBoFExits(model.exits, shapes)
    general = FrozenBoFExits(model.exits, shapes, fuse=False)
    rt_general = rt.with_policy(rt.policy)
    rt.exits, rt_general.exits = fused, general
    images = [x[i : i + 1] for i in range(len(x))]
    runs: dict[str, Any] = {PLAIN: rt.plain, "beta 1, fused heads": rt.run_single}
    runs["beta 1, general heads"] = rt_general.run_single
    inputs: dict[str, list[Any]] = {name: images for name in runs}
    maps, state = [], None
    h = images[0]
    for i in range(model.num_exits - 1):
        h = rt.stages[i](h)
        maps.append(h)
    for i, m in enumerate(maps):
        s = None if i == 0 else general.step(i - 1, maps[i - 1], state)[1]
        for name, form in (("fused", fused), ("general", general)):
            runs[f"exit {i + 1} head, {name}"] = lambda m, i=i, s=s, form=form: form.step(i, m, s)
            inputs[f"exit {i + 1} head, {name}"] = [m] * len(images)
        state = s
    t = interleaved_timing(runs, inputs, reference=PLAIN, rounds=rounds)
    plain = t.mean(PLAIN)
    return {
        name: {
            "mean_us": t.mean(name) * 1e6,
            "p50_us": t.percentile(name, 50) * 1e6,
            "p95_us": t.percentile(name, 95) * 1e6,
            "of_plain": t.mean(name) / plain,
        }
        for name in runs
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=300, help="test images timed at batch 1")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--data-dir")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/fused_heads"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, calibrations, cfg = load_model(args.checkpoint)
    _, test = load_dataset(cfg.dataset, args.data_dir)
    acc = accuracy(model, test, list(model.feature_shapes))
    x, _ = next(test.batches(args.images, shuffle=False))
    times = timing(model, calibrations[cfg.score], cfg.variant, x, args.rounds)
    result = {
        "checkpoint": str(args.checkpoint),
        "shared_width": cfg.model.shared_width,
        "cpu": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "timed_images": len(x),
        "rounds": args.rounds,
        **acc,
        "batch1": times,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fused_heads.json").write_text(json.dumps(result, indent=2) + "\n")
    if "rbf_fused" not in acc["kinds"]:
        print("per-codeword widths differ: both forms are the general one")
    print(f"accuracy per exit on {acc['images']} test images (final last):")
    for name, values in acc["accuracy"].items():
        extra = ""
        if name != "reference":
            extra = (
                f"  classes differing from the reference per exit {acc['classes_differing_from_reference'][name]}"
                f", max logit difference {acc['max_logit_difference'][name]:.1e}"
            )
        print(f"  {name:18s} " + " / ".join(f"{100 * v:.2f}" for v in values) + extra)
    print(f"batch 1, {len(x)} images x {args.rounds} interleaved rounds, {args.threads} threads, us per image:")
    for name, r in times.items():
        print(
            f"  {name:24s} mean {r['mean_us']:8.1f}  p50 / p95 {r['p50_us']:7.1f} / {r['p95_us']:7.1f}"
            f"  x plain {r['of_plain']:.3f}"
        )


if __name__ == "__main__":
    main()
