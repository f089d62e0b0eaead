"""Cross-dataset benchmark: every dataset on this machine x every exit head, policies side by side.

    .venv/bin/python benchmarks/run_all.py [--quick] [--datasets NAME ...] [--heads bof pooled conv]
        [--out runs/benchmarks/all] [--data-dir DIR] [--timing-samples N] [--threads N]
        [--device auto|cpu|cuda[:N]] [--write-readme README.md] [--render-only]

For each registered dataset (all but `image-folder`, or those named) whose files are on disk
(never downloaded here; an absent one is reported as `skipped NAME: <how to get it>`), and each
exit head, it trains the dataset's recipe network (or reuses a finished checkpoint, or resumes
an interrupted one), compares every exit policy on the test set (`compare_policies`: knob grids
from the validation split, chosen points run for real and timed against the plain backbone),
and writes each run's policies.json/csv and report.md into OUT/<dataset>/<head>/.

The backbone is trained once per dataset, so the heads differ only in their exits: the `bof`
run is the recipe's two-phase run (backbone, then BoF exits on it frozen; no fine-tuning, which
would tune the backbone for one head); the `pooled` and
`conv` runs train only their exits, in "frozen" mode on the `bof` run's backbone, with the
recipe's exit epochs and exit learning rate.

Outputs in OUT: results.json (one summary row per dataset and head, the platform, the schedule,
wall times), results.md (a table per dataset, how to get the missing datasets) and
<dataset>_heads.png (accuracy against compute: the proposed rule per head, max-softmax dashed).
`--write-readme FILE` puts the table between `<!-- crossdataset:begin -->` and
`<!-- crossdataset:end -->` in FILE; `--render-only` redoes the outputs from OUT/results.json.

With several datasets, `--data-dir DIR` holds one sub-folder per dataset named as
`bofexits datasets` lists them (DIR/fashion-mnist/, DIR/cifar10/, ...); the files themselves
only when one dataset is run (MNIST and Fashion-MNIST files have the same names).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bofexits._io import write_json, write_text
from bofexits.config import TrainConfig, from_dict
from bofexits.data.registry import list_datasets, load_dataset
from bofexits.devices import DEVICE_HELP, device_argument, resolve_device
from bofexits.errors import BofexitsError, ConfigError, DataError
from bofexits.evaluation.compare import compare_policies
from bofexits.evaluation.comparison import Comparison
from bofexits.evaluation.crossdataset import (
    POINTS,
    BenchmarkResults,
    Machine,
    RunInfo,
    Settings,
    Skipped,
    SummaryRow,
    Wall,
    summary_row,
)
from bofexits.evaluation.speedup import MAX_EFFICIENCY
from bofexits.recipes import apply_recipe, recipe_for
from bofexits.reporting.format import pct
from bofexits.reporting.report import write_results
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.loop import CHECKPOINT, train
from bofexits.training.tuning import validation_split

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # crossdataset.py beside this file, however it is loaded
from crossdataset import (  # noqa: E402
    BEGIN,
    END,
    plot_heads,
    render_markdown,
    render_readme_block,
    render_table,
    replace_block,
)

__all__ = [
    "BEGIN",
    "END",
    "HEADS",
    "QUICK",
    "BenchmarkResults",
    "SummaryRow",
    "main",
    "plot_heads",
    "render_markdown",
    "render_readme_block",
    "render_table",
    "replace_block",
    "summary_row",
]

log = logging.getLogger("run_all")

HEADS: tuple[str, ...] = ("bof", "pooled", "conv")
DATASETS: tuple[str, ...] = tuple(d for d in list_datasets() if d != "image-folder")

# --quick on Fashion-MNIST (vgg28, 2 cores; the demo's 10+4 epochs train in ~7.5 min): 5+3 epochs for the
# bof run (~4 min), 3 exit epochs for each other head (~1 min each), then ~1 min of comparison per head:
# ~10 min for the three heads.
QUICK: dict[str, int] = {
    "epochs": 5,
    "exit_epochs": 3,
    "timing_samples": 100,
    "timed_points": 5,
    "timing_rounds": 3,
    "throughput_batches": 2,
}
FULL: dict[str, int] = {"timing_samples": 200, "timed_points": 9, "timing_rounds": 3, "throughput_batches": 4}
# Config keys that may differ between a saved run and this invocation without changing what it trained:
# where the files are (the stage check below guards the backbone a frozen run was trained on).
_LOCATION_KEYS = ("data_dir", "backbone_checkpoint", "device", "threads")


# --- training -----------------------------------------------------------------------------------


def _data_root(data_dir: Path | None, name: str, several: bool) -> Path | None:
    """DIR/<name> when it exists; DIR itself only for a single dataset (MNIST's file names are Fashion-MNIST's)."""
    if data_dir is None:
        return None
    if (data_dir / name).is_dir():
        return data_dir / name
    return None if several else data_dir


def base_config(dataset: str, root: Path | None, args: argparse.Namespace) -> TrainConfig:
    """Defaults < the dataset's recipe < --quick < the advanced schedule and network options."""
    d = apply_recipe(TrainConfig().to_dict(), recipe_for(dataset))
    # Every head on one frozen backbone: fine-tuning would tune that backbone for one head, so it
    # is off here and measured on its own (benchmarks/finetune_ablation.py).
    d.update(
        mode="two-phase",
        data_dir=str(root) if root is not None else None,
        threads=None,
        device=args.device,
        finetune_epochs=0,
    )
    if args.quick:
        d["epochs"] = min(d["epochs"], QUICK["epochs"])
        d["exit_epochs"] = min(d["exit_epochs"], QUICK["exit_epochs"])
    for key in ("epochs", "exit_epochs", "limit_train", "batch_size", "kmeans_images"):
        if getattr(args, key) is not None:
            d[key] = getattr(args, key)
    if args.widths is not None:
        d["model"]["widths"] = list(args.widths)
    if args.codewords is not None:
        d["model"]["codewords"] = args.codewords
    return from_dict(d)


def head_config(base: TrainConfig, head: str, backbone_checkpoint: Path) -> TrainConfig:
    """`bof`: the two-phase recipe run. Other heads: exits only, on the `bof` run's frozen backbone."""
    d = base.to_dict()
    d["model"]["exit_head"] = head
    if head != "bof":
        d.update(
            mode="frozen",
            epochs=base.exit_epochs,
            exit_epochs=0,
            backbone_checkpoint=str(backbone_checkpoint),
        )
    return from_dict(d)


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    out = [
        f"{k}: {saved.get(k)!r} vs {v!r}"
        for k, v in wanted.items()
        if k not in (*_LOCATION_KEYS, "model") and saved.get(k) != v
    ]
    saved_model = saved.get("model", {})
    out += [
        f"model.{k}: {saved_model.get(k)!r} vs {v!r}"
        for k, v in wanted["model"].items()
        if saved_model.get(k) != v
    ]
    return out


def _check_backbone(model_state: dict[str, torch.Tensor], donor: Path, run_dir: Path) -> None:
    """A frozen-backbone run must sit on the current `bof` run's stages (that run may have been retrained)."""
    donor_state = load_checkpoint(donor)["model"]
    keys = [k for k in donor_state if k.startswith("stages.")]
    if any(k not in model_state or not torch.equal(model_state[k], donor_state[k]) for k in keys):
        raise ConfigError(
            f"{run_dir} was trained on another backbone than the one in {donor} (retrained since?); "
            f"delete {run_dir} so its exits are trained again on the current backbone"
        )


def ensure_trained(
    cfg: TrainConfig, run_dir: Path, *, progress: bool, donor: Path | None = None
) -> tuple[TrainConfig, dict[str, Any]]:
    """Reuse a finished checkpoint in `run_dir`, resume an unfinished one, or train from scratch.

    Returns the run's config (location keys as saved, so that resuming matches) and wall-time facts.
    """
    ckpt = run_dir / CHECKPOINT
    resume = ckpt.exists()
    if resume:
        state = load_checkpoint(ckpt)
        diff = _differences(state["config"], cfg.to_dict())
        if diff:
            raise ConfigError(
                f"{run_dir} holds a run trained with another configuration ({'; '.join(diff[:4])}); "
                f"pass another --out or delete {run_dir}"
            )
        if donor is not None:
            _check_backbone(state["model"], donor, run_dir)
        cfg = from_dict({**cfg.to_dict(), **{k: state["config"].get(k) for k in _LOCATION_KEYS}})
        if state.get("complete"):
            log.info("reusing the finished run in %s", run_dir)
            return cfg, {"train_s": 0.0, "reused": True, "resumed": False}
    log.info(
        "%s %s (%s, %s head)", "resuming" if resume else "training", run_dir, cfg.mode, cfg.model.exit_head
    )
    t0 = time.perf_counter()
    train(cfg, run_dir, resume=resume, progress=progress)
    return cfg, {"train_s": time.perf_counter() - t0, "reused": False, "resumed": resume}


def write_outputs(results: BenchmarkResults, out: Path, readme: Path | None = None) -> None:
    """results.json, results.md, the per-dataset plots and (optionally) the README block."""
    write_json(out / "results.json", results.to_dict())
    for ds in dict.fromkeys(r.dataset for r in results.rows):
        plot_heads(results, ds, out / f"{ds}_heads.png")
    write_text(out / "results.md", render_markdown(results))
    if readme is not None:
        write_text(
            readme,
            replace_block(readme.read_text(encoding="utf-8"), render_readme_block(results), str(readme)),
        )
        print(f"updated the cross-dataset block in {readme}")


# --- main -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"short schedule and timing: {QUICK}")
    ap.add_argument(
        "--datasets", nargs="+", choices=DATASETS, metavar="NAME", help=f"default: all of {DATASETS}"
    )
    ap.add_argument(
        "--heads", nargs="+", choices=HEADS, default=list(HEADS), help="exit heads (default: all)"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/all"))
    ap.add_argument("--data-dir", type=Path, help="one sub-folder per dataset (DIR/cifar10/, ...)")
    ap.add_argument("--timing-samples", type=int, help="test images timed at batch 1 (0: no timing)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", type=device_argument, default="auto", help=f"{DEVICE_HELP} (default auto)")
    ap.add_argument(
        "--write-readme", type=Path, metavar="FILE", help="replace the crossdataset block in FILE"
    )
    ap.add_argument("--render-only", action="store_true", help="redo the outputs from OUT/results.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    adv = ap.add_argument_group("advanced (smoke runs and tests: shrink the schedule and the network)")
    for flag in (
        "--epochs",
        "--exit-epochs",
        "--limit-train",
        "--batch-size",
        "--kmeans-images",
        "--codewords",
    ):
        adv.add_argument(flag, type=int)
    adv.add_argument("--widths", type=int, nargs="+")
    adv.add_argument("--points", type=int, default=POINTS, help="knob values per threshold policy")
    adv.add_argument(
        "--max-efficiency",
        type=float,
        default=MAX_EFFICIENCY,
        help="a speedup above this many times the compute speedup is measured again, then refused "
        "(toy networks, whose time is per-operation overhead: inf)",
    )
    for flag in ("--timed-points", "--timing-rounds", "--throughput-batches"):
        adv.add_argument(flag, type=int)
    return ap


def _schedule(base: TrainConfig) -> dict[str, Any]:
    """The training schedule of one dataset: what --quick and the advanced options changed, exactly."""
    keys = (
        "lr exit_lr batch_size optimizer weight_decay augment flip crop_padding val_fraction seed limit_train"
    )
    return {
        "backbone_epochs (two-phase, bof run)": base.epochs,
        "exit_epochs (every head)": base.exit_epochs,
        **{k: getattr(base, k) for k in (*keys.split(), "kmeans_images")},
        "model": {
            "backbone": base.model.backbone,
            "widths": base.model.widths,
            "codewords": base.model.codewords,
        },
    }


def _settings(args: argparse.Namespace) -> Settings:
    """--quick or the full timing settings, each overridden by its flag."""
    chosen = {k: (QUICK if args.quick else FULL)[k] for k in FULL}
    chosen.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    return Settings(**chosen, points=args.points, max_efficiency=args.max_efficiency)


def _compare_run(
    cfg: TrainConfig, run_dir: Path, settings: Settings, device: str
) -> tuple[Comparison, float]:
    """The policy comparison of one trained run (saved with its report), and how long it took."""
    model, calibrations, saved = load_model(run_dir / CHECKPOINT)
    _, test = load_dataset(cfg.dataset, cfg.data_dir, download=False)
    val = validation_split(cfg)  # the same seed, fraction and limit as training: never the test set
    t0 = time.perf_counter()
    comparison = compare_policies(
        model,
        calibrations,
        val,
        test,
        score=saved.score,
        variant=saved.variant,
        device=device,
        **settings.compare_kwargs(),
    )
    write_results(run_dir, "compare", comparison=comparison)  # with the report, as one set
    return comparison, time.perf_counter() - t0


def _run_one(
    dataset: str, head: str, cfg: TrainConfig, run_dir: Path, settings: Settings, args: argparse.Namespace
) -> SummaryRow | None:
    """Train (or reuse) one head's run, compare its policies, and summarise it (None: bof run not asked for)."""
    donor = run_dir.parent / "bof" / CHECKPOINT if head != "bof" else None
    data_dir = cfg.data_dir  # where the files are now (a reused run may have read them elsewhere)
    _, wall = ensure_trained(cfg, run_dir, progress=not args.quiet, donor=donor)
    if head not in args.heads:  # the bof run only provides the other heads' backbone
        return None
    cfg = dataclasses.replace(load_model(run_dir / CHECKPOINT)[2], data_dir=data_dir)
    log.info("comparing policies: %s / %s", dataset, head)
    comparison, compare_s = _compare_run(cfg, run_dir, settings, args.device)
    history = load_checkpoint(run_dir / CHECKPOINT)["history"]
    backbone_cfg = cfg if donor is None else load_model(donor)[2]
    run = RunInfo(
        backbone=cfg.model.backbone,
        mode="two-phase" if donor is None else "frozen (exits only, on the bof run's backbone)",
        backbone_epochs=backbone_cfg.epochs,
        exit_epochs=cfg.exit_epochs if donor is None else cfg.epochs,
        config=cfg.to_dict(),
        run_dir=f"{dataset}/{head}",
        wall=Wall(**wall, train_s_recorded=sum(h["seconds"] for h in history), compare_s=compare_s),
    )
    return summary_row(dataset, head, comparison, run)


def _knee_line(row: SummaryRow) -> str:
    knee = row.knee
    where = f"{pct(knee.accuracy)} at {pct(knee.relative_macs, 1)} MACs" if knee else "none"
    return f"{row.dataset} / {row.head}: full {pct(row.final_accuracy)}, knee {where}"


def _run_dataset(
    dataset: str, root: Path | None, args: argparse.Namespace, results: BenchmarkResults, t_start: float
) -> None:
    """Every asked-for head of one dataset (the bof run first: it holds the shared backbone)."""
    out: Path = args.out
    try:
        load_dataset(dataset, root, download=False)
    except DataError as exc:
        print(f"skipped {dataset}: {exc}")
        results.skipped.append(Skipped(dataset, str(exc)))
        return
    base = base_config(dataset, root, args)
    results.training_batch_size = base.batch_size
    results.schedule[dataset] = _schedule(base)
    for head in ["bof", *[h for h in HEADS if h in args.heads and h != "bof"]]:
        cfg = head_config(base, head, out / dataset / "bof" / CHECKPOINT)
        row = _run_one(dataset, head, cfg, out / dataset / head, results.comparison, args)
        if row is not None:
            results.rows.append(row)
            results.wall_s = time.perf_counter() - t_start
            write_json(out / "results.json", results.to_dict())  # partial results survive an interruption
            print(_knee_line(row))


def _render_only(out: Path, readme: Path | None) -> int:
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist; run the benchmark first (without --render-only)")
    try:
        results = BenchmarkResults.from_dict(json.loads(path.read_text()))
    except BofexitsError as exc:
        raise SystemExit(f"run_all: {path}: {exc}") from exc
    write_outputs(results, out, readme)
    print(f"wrote {out / 'results.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    readme: Path | None = args.write_readme
    if readme is not None:  # fail before hours of training, not after
        if not readme.is_file():
            raise SystemExit(f"--write-readme {readme}: no such file")
        replace_block(readme.read_text(encoding="utf-8"), "", str(readme))
    if args.render_only:
        return _render_only(args.out, readme)
    try:
        resolve_device(args.device)  # a GPU that is not there: refused before hours of training
    except BofexitsError as exc:
        raise SystemExit(f"run_all: {exc}") from exc
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    results = BenchmarkResults(
        command="python benchmarks/run_all.py " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        quick=args.quick,
        comparison=_settings(args),
        platform=Machine.here(args.device),
    )
    datasets = args.datasets or list(DATASETS)
    try:
        for dataset in datasets:
            root = _data_root(args.data_dir, dataset, several=len(datasets) > 1)
            _run_dataset(dataset, root, args, results, t_start)
    except BofexitsError as exc:
        raise SystemExit(f"run_all: {exc}") from exc
    results.wall_s = time.perf_counter() - t_start
    write_outputs(results, args.out, readme)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
