"""Joint fine-tuning, ablated: each setting fine-tunes the same finished run and is judged the same way.

    .venv/bin/python benchmarks/finetune_ablation.py runs/demo/checkpoint.pt \\
        [--out runs/benchmarks/finetune] [--row NAME:KEY=VALUE,...]... [--data-dir DIR]

Every row copies the finished two-phase (or frozen) run's checkpoint into its own folder and
resumes it with that row's fine-tuning settings (`bofexits train --resume --finetune-epochs N`
does the same), so every row starts from the same network and the frozen-backbone network is
the first row. A row is judged on the run's validation split and on its test set with
`bofexits.evaluation.frontier.summarize_frontier`: every exit's accuracy, the proposed rule's
knee within 0.5 pp and within 0.3 pp of the STARTING network's full accuracy (not of a lowered
one), and the knee's MACs over the oracle's at the same accuracy. Rows already in the output
are kept (rerun to finish an interrupted ablation); `--row` replaces the default grid, e.g.
`--row e2:finetune_epochs=2 --row e2d0:finetune_epochs=2,finetune_distill=0`, where
`finetune_weights=1/1/1/2` sets the per-exit weights.

Writes finetune.json and finetune.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine, write_result

from bofexits.config import FINETUNE_KEYS, TrainConfig, from_dict
from bofexits.data import ImageDataset
from bofexits.evaluation.collect import collect_logits
from bofexits.evaluation.cost import measure_costs
from bofexits.evaluation.frontier import FrontierSummary, summarize_frontier
from bofexits.reporting.format import pct
from bofexits.reporting.tables import markdown_table
from bofexits.training.checkpoint import load_model
from bofexits.training.loop import CHECKPOINT, train
from bofexits.training.splits import run_splits

DEFAULT_ROWS = [  # the ablation in docs/decisions.md, "Joint fine-tuning"
    "ft2:finetune_epochs=2,finetune_lr=3e-4",
    "ft2-lr1e-3:finetune_epochs=2,finetune_lr=1e-3",
    "ft2-lr3e-3:finetune_epochs=2,finetune_lr=3e-3",
    "ft2-lr1e-3-early:finetune_epochs=2,finetune_lr=1e-3,finetune_weights=4/2/1/1",
    "ft2-lr3e-3-early:finetune_epochs=2,finetune_lr=3e-3,finetune_weights=4/2/1/1",
    "ft4-lr3e-3:finetune_epochs=4,finetune_lr=3e-3",
    "ft2-lr3e-3-nodistill:finetune_epochs=2,finetune_lr=3e-3,finetune_distill=0",
    "ft2-lr1e-2:finetune_epochs=2,finetune_lr=1e-2",
    "ft2-lr3e-3-distill1:finetune_epochs=2,finetune_lr=3e-3,finetune_distill=1",
    "ft1-lr3e-3:finetune_epochs=1,finetune_lr=3e-3",
]


def parse_row(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,...` with fine-tuning keys only; lists as `a/b/c`."""
    name, _, body = text.partition(":")
    settings: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key not in FINETUNE_KEYS:
            raise SystemExit(f"row {name!r}: {key!r} is not a fine-tuning key ({', '.join(FINETUNE_KEYS)})")
        if key == "finetune_weights":
            settings[key] = [float(v) for v in value.split("/")]
        elif key == "finetune_epochs":
            settings[key] = int(value)
        else:
            settings[key] = float(value)
    return name, settings


def judge(
    ckpt: Path, val: ImageDataset, test: ImageDataset, reference: tuple[float, float] | None
) -> dict[str, FrontierSummary]:
    """The frontier summary of a finished run on validation and test (against `reference`, else its own)."""
    model, cals, cfg = load_model(ckpt)
    costs = measure_costs(model)
    out = {}
    for i, (split, data) in enumerate((("val", val), ("test", test))):
        logits, labels = collect_logits(model, data, batch_size=1000)
        out[split] = summarize_frontier(
            logits,
            labels,
            cals[cfg.score],
            costs,
            reference_accuracy=None if reference is None else reference[i],
            variant=cfg.variant,
        )
    return out


def _cell(s: FrontierSummary) -> list[str]:
    knee = f"{pct(s.knee_accuracy)} @ {pct(s.knee_macs)}" if s.knee_macs is not None else "-"
    tight = pct(s.tight_macs) if s.tight_macs is not None else "unreachable"
    ratio = f"{s.oracle_ratio:.2f}x" if s.oracle_ratio is not None else "-"
    return [" / ".join(pct(a) for a in s.exit_accuracy[:-1]), pct(s.final_accuracy), knee, tight, ratio]


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "row",
        "fine-tuning",
        "test: exits 1..3",
        "final",
        "knee (<= 0.5 pp) acc @ MACs",
        "<= 0.3 pp MACs",
        "oracle ratio",
        "val knee MACs",
    ]
    body = []
    for r in rows:
        test, val = r["test"], r["val"]
        settings = ", ".join(f"{k.removeprefix('finetune_')} {v}" for k, v in r["settings"].items()) or "none"
        val_knee = pct(val.knee_macs) if val.knee_macs is not None else "-"
        body.append([r["name"], settings, *_cell(test), val_knee])
    return markdown_table(head, body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a finished two-phase or frozen run's checkpoint.pt")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/finetune"))
    p.add_argument(
        "--row", action="append", help="NAME:key=value,... (repeatable; default: the standard grid)"
    )
    p.add_argument("--data-dir", help="the run's data folder (default: the one it was trained from)")
    p.add_argument("--readme", action="store_true", help="also replace the README's `finetune` block")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    _, _, base_cfg = load_model(args.checkpoint)
    if base_cfg.finetune_epochs:
        raise SystemExit(f"{args.checkpoint} is already fine-tuned; pass the run it started from")
    data_cfg = dataclasses.replace(base_cfg, data_dir=args.data_dir or base_cfg.data_dir)
    _, val, test = run_splits(data_cfg)
    base = judge(args.checkpoint, val, test, None)
    reference = (base["val"].reference_accuracy, base["test"].reference_accuracy)
    results_file = args.out / "finetune.json"
    done: dict[str, dict[str, Any]] = {}
    if results_file.exists():
        done = {r["name"]: r for r in json.loads(results_file.read_text())["rows"]}
    rows: list[dict[str, Any]] = [{"name": "two-phase", "settings": {}, **base}]
    for name, settings in map(parse_row, args.row or DEFAULT_ROWS):
        if name in done and done[name]["settings"] == settings:
            rows.append({**done[name], **{s: FrontierSummary(**done[name][s]) for s in ("val", "test")}})
            continue
        run_dir = args.out / name
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / CHECKPOINT).exists():
            shutil.copyfile(args.checkpoint, run_dir / CHECKPOINT)
        cfg: TrainConfig = dataclasses.replace(base_cfg, **settings)  # the run's own config: resume checks it
        t0 = time.perf_counter()
        train(from_dict(cfg.to_dict()), run_dir, resume=True, progress=False)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "name": name,
                "settings": settings,
                "seconds": seconds,
                **judge(run_dir / CHECKPOINT, val, test, reference),
            }
        )
        _write(args, base_cfg, rows, start)
        print(f"{name}: {seconds:.0f} s", file=sys.stderr)
    _write(args, base_cfg, rows, start)
    return 0


def _write(args: argparse.Namespace, base: TrainConfig, rows: list[dict[str, Any]], start: float) -> None:
    plain = [{**r, **{s: r[s].to_dict() for s in ("val", "test")}} for r in rows]
    result = {
        "checkpoint": str(args.checkpoint),
        "machine": machine(),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - start,
        "rows": plain,
    }
    head = (
        f"Fine-tuning `{args.checkpoint}` (its frozen-backbone network is the first row; "
        f"`bofexits train --dataset {base.dataset} --epochs {base.epochs} --exit-epochs {base.exit_epochs} "
        f"--finetune-epochs 0 --no-shared-width --out {args.checkpoint.parent}` trains it), every row resumed "
        f"from it; knees held to that network's full accuracy (test {pct(rows[0]['test'].reference_accuracy)}). "
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch {torch.__version__}. "
        f"`python benchmarks/finetune_ablation.py {args.checkpoint} --readme`."
    )
    write_result(args.out, "finetune", result, f"{head}\n\n{table(rows)}", "finetune" if args.readme else None)


if __name__ == "__main__":
    raise SystemExit(main())
