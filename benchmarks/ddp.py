"""Training throughput on 1 and 2 processes (torchrun, gloo) and, when there is one, on 1 GPU.

    .venv/bin/python benchmarks/ddp.py [--train-images 2000] [--epochs 2] [--batch-size 64]
        [--out runs/benchmarks/ddp]

Trains the same small joint-mode network on synthetic Fashion-MNIST-shaped images (written
into --out, so nothing is downloaded) with `torchrun --nproc-per-node N -m bofexits train`,
one thread per process, and reads the seconds of each epoch from the run's checkpoint:
samples/s = training images x epochs / training seconds (validation included; start-up,
k-means and calibration not). The global batch is the same for every N (docs/distributed.md).

On a 2-core machine shared with other work two processes cannot be faster than one: they
share the cores, and every step adds a gradient all-reduce. The script measures that rather
than a speed-up; data parallelism pays on machines with a core (or a GPU) per process.
Writes ddp.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from bofexits._io import write_json
from bofexits.config import ModelConfig, TrainConfig
from bofexits.data import write_idx
from bofexits.training.checkpoint import load_checkpoint
from bofexits.training.splits import run_splits


def fake_fashion_mnist(root: Path, n_train: int, n_test: int = 200, seed: int = 0) -> Path:
    """IDX files in Fashion-MNIST's layout: class c paints a square at grey level 24c + 20."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 12, (n, 28, 28)).astype(np.uint8)
        images[:, 6:22, 6:22] += (24 * labels + 20).astype(np.uint8)[:, None, None]
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def throughput(cfg: TrainConfig, out: Path, nproc: int) -> dict[str, float]:
    """Train `cfg` on `nproc` processes into `out`; samples/s over the training epochs."""
    write_json(out.with_suffix(".json"), cfg.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += [
        "-m",
        "bofexits",
        "--quiet",
        "train",
        "--config",
        str(out.with_suffix(".json")),
        "--out",
        str(out),
    ]
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own scratch run from an earlier call
    subprocess.run(cmd, check=True, env=env, timeout=1800)
    history = load_checkpoint(out / "checkpoint.pt")["history"]
    seconds = sum(h["seconds"] for h in history)
    images = len(run_splits(cfg)[0]) * len(history)
    return {"processes": nproc, "seconds": seconds, "samples_per_s": images / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/ddp"))
    args = p.parse_args()
    data = fake_fashion_mnist(args.out / "data", round(args.train_images / 0.9))  # 10% become validation
    cfg = TrainConfig(
        data_dir=str(data),
        mode="joint",
        epochs=args.epochs,
        batch_size=args.batch_size,
        kmeans_images=64,
        threads=1,
        device="cpu",
        model=ModelConfig(widths=[8, 16, 16, 32], codewords=8),
    )
    rows = [throughput(cfg, args.out / f"cpu-{n}", n) | {"device": "cpu"} for n in (1, 2)]
    if torch.cuda.is_available():
        gpu = dataclasses.replace(cfg, device="cuda")
        rows.append(throughput(gpu, args.out / "gpu-1", 1) | {"device": "cuda"})
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}
    write_json(args.out / "ddp.json", result)
    print(f"{'device':8} {'processes':>9} {'samples/s':>10} {'seconds':>8}")
    for r in rows:
        print(f"{r['device']:8} {r['processes']:>9} {r['samples_per_s']:>10.0f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
