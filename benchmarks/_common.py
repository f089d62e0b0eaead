"""What the speed benchmarks share: the parts of adaptive inference timed one by one, where a run's
knee is, the machine's facts, a speed row's cells, random-input calibration and writing a result folder.

Each of these was written two or three times across runtimes.py, gpu_check.py, deploy.py and
scaling.py; one copy keeps the tables and JSON of every benchmark in step.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _readme_blocks import write_block

from bofexits.evaluation.cost import CostTable
from bofexits.evaluation.timing import cpu_model, interleaved_timing
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies import ExitCalibration, ExitPolicy
from bofexits.reporting.format import times, times_interval
from bofexits.reporting.report import knee_beta

PLAIN_PART = "plain backbone"
"""The name `runtime_parts` gives the plain backbone, against which every part's share is taken."""


@dataclass
class Part:
    """One piece of adaptive inference, called on the input it sees in the runtime."""

    name: str
    macs: int
    fn: Callable[[Any], object]
    x: Any


def runtime_parts(
    runtime: AdaptiveRuntime, policy: ExitPolicy, costs: CostTable, x: torch.Tensor
) -> list[Part]:
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
    return [*parts, Part(PLAIN_PART, costs.backbone_macs, runtime.plain, x)]


def time_parts(parts: list[Part], batch: int, reps: int, rounds: int) -> list[dict[str, Any]]:
    """Median µs per image of each part, all parts interleaved in the same rounds."""
    timing = interleaved_timing(
        {p.name: p.fn for p in parts},
        {p.name: [p.x] * reps for p in parts},
        reference=PLAIN_PART,
        rounds=rounds,
    )
    plain = timing.median(PLAIN_PART)
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


def knee_beta_or(run_dir: Path, default: float) -> tuple[float, str]:
    """The knee's beta from the run's results.json (what `make demo` reports), else `default`; and whence."""
    beta = knee_beta(run_dir)
    if beta is None:
        return default, "default beta (no results.json with a knee beside the checkpoint)"
    return beta, f"the knee of {run_dir / 'results.json'}"


def machine() -> dict[str, Any]:
    """The CPU's model, its logical cores and the architecture, as every benchmark records them."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine()}


def versions(*modules: ModuleType) -> dict[str, str]:
    """name -> version of each module (torch, onnxruntime, numpy...)."""
    return {m.__name__: str(m.__version__) for m in modules}


def efficiency_cell(value: float | None) -> str:
    """A runtime efficiency, or '-' where there is none (the plain backbone itself)."""
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def speed_cells(row: Mapping[str, Any], percentiles: Iterable[int] = (50, 95, 99)) -> list[str]:
    """A speed row's measured cells: mean ms, the percentiles, images/s, speedup, compute speedup, efficiency.

    `row` holds `mean_ms`, `p{q}_ms` for each percentile, `images_per_s`, `speedup`,
    `compute_speedup` and `efficiency` (NaN for the plain backbone); `speedup_low` and
    `speedup_high`, where the row has them, print as the speedup's interval.
    """
    return [
        f"{row['mean_ms']:.4f}",
        " / ".join(f"{row[f'p{q}_ms']:.3f}" for q in percentiles),
        f"{row['images_per_s']:.0f}",
        times_interval(row["speedup"], row.get("speedup_low"), row.get("speedup_high")),
        times(row["compute_speedup"]),
        efficiency_cell(row["efficiency"]),
    ]


def speed_header(percentiles: Iterable[int] = (50, 95, 99)) -> list[str]:
    """The header of `speed_cells`' columns."""
    qs = " / ".join(f"p{q}" for q in percentiles)
    return ["mean ms", f"{qs} ms", "images/s", "speedup (95% CI)", "compute speedup", "efficiency"]


def random_inputs(shape: tuple[int, ...], n: int, seed: int) -> torch.Tensor:
    """`n` standard-normal images of `shape`, reproducible from `seed`."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def fit_on_random(
    model: MultiExitNetwork, samples: int, device: torch.device | str = "cpu", chunk: int = 128
) -> ExitCalibration:
    """The max_prob calibration of `model` on random inputs (run on `device`): for timing only.

    Networks with random weights (torchvision rows, dry runs) have no data to calibrate on; the
    thresholds then only need to split the samples between the exits, which random inputs do.
    """
    net = copy.deepcopy(model).to(device)
    outs = [
        net(random_inputs(model.input_shape, min(chunk, samples - i), 100 + i).to(device))[:-1]
        for i in range(0, samples, chunk)
    ]
    return ExitCalibration.fit(
        [torch.cat([o[e] for o in outs]).cpu() for e in range(len(outs[0]))], "max_prob"
    )


def write_result(
    out: Path, stem: str, result: Mapping[str, Any], table: str, readme: str | None = None
) -> None:
    """`out/stem.json` and `out/stem.md`, the table printed, and the README block `readme` replaced."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    if readme is not None:
        write_block(readme, table)
