"""Cross-dataset benchmark: every dataset on this machine x every exit head, policies side by side.

    .venv/bin/python benchmarks/run_all.py [--quick] [--datasets NAME ...] [--heads bof pooled conv]
        [--out runs/benchmarks/all] [--data-dir DIR] [--timing-samples N] [--threads N]
        [--write-readme README.md] [--render-only]

For each registered dataset (all but `image-folder`, or those named) whose files are on disk
(never downloaded here; an absent one is reported as `skipped NAME: <how to get it>`), and each
exit head, it trains the dataset's recipe network (or reuses a finished checkpoint, or resumes
an interrupted one), compares every exit policy on the test set (`compare_policies`: knob grids
from the validation split, chosen points run for real and timed against the plain backbone),
and writes each run's policies.json/csv and report.md into OUT/<dataset>/<head>/.

The backbone is trained once per dataset, so the heads differ only in their exits: the `bof`
run is the recipe's two-phase run (backbone, then BoF exits on it frozen); the `pooled` and
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
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bofexits._io import atomic_path, write_json, write_text  # noqa: E402
from bofexits.config import TrainConfig, from_dict  # noqa: E402
from bofexits.data.registry import list_datasets, load_dataset  # noqa: E402
from bofexits.errors import BofexitsError, ConfigError, DataError  # noqa: E402
from bofexits.evaluation.claims import BASELINES  # noqa: E402
from bofexits.evaluation.compare import LEVELS, compare_policies, save_comparison  # noqa: E402
from bofexits.evaluation.timing import cpu_model  # noqa: E402
from bofexits.reporting.report import write_report  # noqa: E402
from bofexits.training.checkpoint import load_checkpoint, load_model  # noqa: E402
from bofexits.training.loop import CHECKPOINT, resolve_device, train  # noqa: E402
from bofexits.training.recipes import apply_recipe, recipe_for  # noqa: E402
from bofexits.training.tuning import validation_split  # noqa: E402

__all__ = [
    "BEGIN",
    "END",
    "HEADS",
    "QUICK",
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
BEGIN, END = "<!-- crossdataset:begin -->", "<!-- crossdataset:end -->"
HEAD_COST_LIMIT = 0.05
"""Exit heads must cost at most this share of the backbone's MACs (a target of this benchmark)."""

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
THROUGHPUT_BATCH = 256
POINTS = 101
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
    d.update(mode="two-phase", data_dir=str(root) if root is not None else None, threads=None)
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


# --- one summary row per run ----------------------------------------------------------------------


def _point(p: dict[str, Any] | None, knob: str) -> dict[str, Any] | None:
    if p is None:
        return None
    out = {
        "accuracy": p["accuracy"],
        "relative_macs": p["relative_macs"],
        "balance": p["balance"],
        knob: p[knob],
    }
    if "timing" in p:
        out["batch1_speedup"] = p["timing"]["batch1_speedup"]
        out["batched_speedup"] = p["timing"]["batched_speedup"]
    return out


def summary_row(
    dataset: str, head: str, comparison: dict[str, Any], schedule: dict[str, Any]
) -> dict[str, Any]:
    """The numbers a cross-dataset table needs from one run's `compare_policies` output."""
    fams = {f["name"]: f for f in comparison["families"]}
    prop = next(f for f in comparison["families"] if f["proposed"])
    costs = comparison["costs"]
    exit_macs = sum(costs["exit_macs"]) / costs["backbone_macs"]
    levels: dict[str, Any] = {}
    for lv in LEVELS:
        key = f"{lv:g}"
        rivals = [(n, fams[n]["at_levels"][key]) for n in BASELINES if n in fams]
        rivals = [(n, p) for n, p in rivals if p is not None]
        name, best = max(rivals, key=lambda r: r[1]["accuracy"]) if rivals else (None, None)
        mine = prop["at_levels"][key]
        levels[key] = {
            "proposed": _point(mine, "beta"),
            "best_baseline": None
            if best is None
            else {"policy": name, **(_point(best, fams[name]["knob"]) or {})},
            "difference_pp": 100 * (mine["accuracy"] - best["accuracy"]) if mine and best else None,
        }
    singles = sorted(fams["single-exit"]["points"], key=lambda p: p["exit"])

    def curve(fam: dict[str, Any]) -> list[list[float]]:
        return [[round(p["relative_macs"], 6), round(p["accuracy"], 6)] for p in fam["points"]]

    return {
        "dataset": dataset,
        "head": head,
        **schedule,
        "num_test": comparison["num_test"],
        "num_val": comparison["num_val"],
        "final_accuracy": comparison["full_accuracy"],
        "exit_accuracies": [p["accuracy"] for p in singles[:-1]],
        "exit_heads_macs_pct": 100 * exit_macs,
        "exit_heads_params_pct": 100 * costs["exit_params"] / costs["backbone_params"],
        "exit_heads_within_5pct_macs": exit_macs <= HEAD_COST_LIMIT,
        "backbone_macs": costs["backbone_macs"],
        "rule": prop["label"],
        "knee": _point(prop["knee"], "beta"),
        "at_levels": levels,
        "claims": {c["claim"]: c["verdict"] for c in comparison["claims"]},
        "runtime_check": comparison.get("timing", {}).get("runtime_check"),
        "curves": {"proposed": curve(prop), "max-softmax": curve(fams["max-softmax"])},
    }


# --- rendering ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _level_cell(level: dict[str, Any]) -> str:
    mine, best = level["proposed"], level["best_baseline"]
    if mine is None:
        return "unreachable"
    if best is None:
        return f"{_pct(mine['accuracy'])} vs none"
    return f"{_pct(mine['accuracy'])} vs {_pct(best['accuracy'])} {best['policy']} ({level['difference_pp']:+.2f})"


def _knee_cells(knee: dict[str, Any] | None) -> list[str]:
    if knee is None:
        return ["none", "-"]
    cell = f"{_pct(knee['accuracy'])} @ {100 * knee['relative_macs']:.1f}%"
    cell += f" (beta {knee['beta']:.3g}, bal {knee['balance']:.2f})"
    speed = (
        f"{knee['batch1_speedup']:.2f}x / {knee['batched_speedup']:.2f}x" if "batch1_speedup" in knee else "-"
    )
    return [cell, speed]


def render_table(results: dict[str, Any]) -> str:
    """Markdown: one table per dataset (a row per exit head), then what the columns mean.

    Reused by README generators; reads only `results["rows"]` (and `results["quick"]`).
    """
    rows = results["rows"]
    if not rows:
        return "No dataset was run (none of the requested datasets is on this machine)."
    levels = list(rows[0]["at_levels"])
    out: list[str] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == ds]
        first = mine[0]
        quick = ", quick schedule" if results.get("quick") else ""
        out += [
            f"**{ds}** (`{first['backbone']}`, {first['num_test']} test images; epochs: backbone "
            f"{first['backbone_epochs']}, exits {first['exit_epochs']}{quick})",
            "",
            "| exit head | full net % | exits alone % | heads: % of backbone MACs / params | heads <= 5% MACs "
            "| knee: acc % @ MACs | knee speedup b1 / batched | "
            + " | ".join(f"<= {float(lv):.0%} MACs: proposed vs best baseline" for lv in levels)
            + " | claims a / b / c |",
            "|" + "---|" * (8 + len(levels)),
        ]
        for r in mine:
            out.append(
                "| "
                + " | ".join(
                    [
                        r["head"],
                        _pct(r["final_accuracy"]),
                        " / ".join(_pct(a) for a in r["exit_accuracies"]),
                        f"{r['exit_heads_macs_pct']:.2f} / {r['exit_heads_params_pct']:.2f}",
                        "yes" if r["exit_heads_within_5pct_macs"] else "**no**",
                        *_knee_cells(r["knee"]),
                        *[_level_cell(r["at_levels"][lv]) for lv in levels],
                        " / ".join(r["claims"].get(k, "-") for k in ("a", "b", "c")),
                    ]
                )
                + " |"
            )
        out.append("")
    out.append(
        "Accuracy on the test set, %. The backbone is trained once per dataset (two-phase, `bof` run); the "
        "`pooled` (SDN) and `conv` (BranchyNet-style) heads are trained on it frozen. Knee: the cheapest point "
        "of the proposed rule within 0.5 pp of the full network; speedups against the plain backbone timed "
        "interleaved in the same run. `<= X MACs`: the most accurate point using at most that share of the "
        f"backbone's MACs, proposed rule vs the best of {', '.join(BASELINES)} (difference in pp). Claims: the "
        "paper's (a) balance, (b) one knob, (c) accuracy and time vs existing rules, as checked in each run's "
        "report.md."
    )
    return "\n".join(out)


def _provenance(results: dict[str, Any]) -> str:
    plat = results["platform"]
    comp = results["comparison"]
    sched = "quick schedule" if results["quick"] else "full recipe schedule"
    timing = (
        f"batch-1 timing over {comp['timing_samples']} test images, batched at {comp['throughput_batch']}"
        if comp["timing_samples"] > 0
        else "not timed"
    )
    return (
        f"Produced by `{results['command']}` on {results['date'][:10]}: {plat['cpu_model']}, "
        f"{plat['threads']} torch threads, torch {plat['torch']} ({sched}; {timing})."
    )


def render_readme_block(results: dict[str, Any]) -> str:
    """The README block: where the numbers come from, the tables, and which datasets were absent."""
    parts = [_provenance(results), "", render_table(results)]
    if results["skipped"]:
        names = ", ".join(s["dataset"] for s in results["skipped"])
        parts += ["", f"Not run (files not on that machine): {names}; `results.md` says how to get them."]
    return "\n".join(parts)


def render_markdown(results: dict[str, Any]) -> str:
    """results.md: provenance, the tables, plots, per-run reports, missing datasets, wall times."""
    out = ["# Cross-dataset benchmark", "", _provenance(results), "", render_table(results), ""]
    datasets = list(dict.fromkeys(r["dataset"] for r in results["rows"]))
    if datasets:
        out += ["## Accuracy against compute per exit head", ""]
        out += [f"![{ds}]({ds}_heads.png)" for ds in datasets]
        out += ["", "## Per-run reports", ""]
        out += [
            f"- {r['dataset']} / {r['head']}: [{r['run_dir']}/report.md]({r['run_dir']}/report.md)"
            for r in results["rows"]
        ]
        out += [
            "",
            "## Wall time",
            "",
            "| run | training s (this invocation) | training s (recorded) | comparison s |",
        ]
        out += ["|---|---|---|---|"]
        out += [
            f"| {r['dataset']} / {r['head']} | {r['wall']['train_s']:.0f}{' (reused)' if r['wall']['reused'] else ''} "
            f"| {r['wall']['train_s_recorded']:.0f} | {r['wall']['compare_s']:.0f} |"
            for r in results["rows"]
        ]
        out.append("")
    if results["skipped"]:
        out += [
            "## Datasets not run: how to get them",
            "",
            "Nothing is downloaded by this script. Put each dataset's files in DIR/<name>/ and pass "
            "`--data-dir DIR`, or use the places each message names, then run the same command again "
            "(finished runs are reused).",
            "",
        ]
        out += [f"- **{s['dataset']}**: {s['reason']}" for s in results["skipped"]]
        out.append("")
    out += [f"Total wall time: {results['wall_s']:.0f} s.", ""]
    return "\n".join(out)


def plot_heads(results: dict[str, Any], dataset: str, path: Path) -> Path:
    """Accuracy vs relative MACs of the proposed rule per head (solid), each head's max-softmax dashed."""
    rows = [r for r in results["rows"] if r["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    accs: list[float] = []
    for i, r in enumerate(rows):
        color = f"C{i}"
        for name, style in (("proposed", "-"), ("max-softmax", "--")):
            pts = r["curves"][name]
            accs += [100 * a for _, a in pts]
            label = f"{r['head']}: {'proposed rule' if name == 'proposed' else 'max-softmax'}"
            ax.plot(
                [100 * m for m, _ in pts], [100 * a for _, a in pts], style, color=color, lw=1.3, label=label
            )
        if r["knee"] is not None:
            ax.plot([100 * r["knee"]["relative_macs"]], [100 * r["knee"]["accuracy"]], "o", color=color, ms=5)
    top = max(100 * r["final_accuracy"] for r in rows)
    ax.axhline(top, color="grey", lw=0.8, ls=":", label="full network")
    if accs:
        ax.set_ylim(max(min(accs), top - 10) - 0.5, max(max(accs), top) + 0.5)
    ax.set_xlabel("mean MACs per sample (% of the plain backbone)")
    ax.set_ylabel("top-1 test accuracy (%)")
    ax.set_title(f"{dataset}: exit heads on one backbone (dots: knees)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def replace_block(text: str, block: str, source: str = "the file") -> str:
    """`text` with everything between the crossdataset markers replaced by `block` (markers kept).

    >>> replace_block("a\\n<!-- crossdataset:begin -->\\nold\\n<!-- crossdataset:end -->\\nb", "new")
    'a\\n<!-- crossdataset:begin -->\\nnew\\n<!-- crossdataset:end -->\\nb'
    """
    begin, end = text.find(BEGIN), text.find(END)
    if text.count(BEGIN) != 1 or text.count(END) != 1 or end < begin:
        raise SystemExit(
            f"{source} needs exactly one `{BEGIN}` line followed by one `{END}` line where the cross-dataset "
            "table goes; add them (this script does not add them itself) and run again"
        )
    return text[: begin + len(BEGIN)] + "\n" + block.strip("\n") + "\n" + text[end:]


def write_outputs(results: dict[str, Any], out: Path, readme: Path | None = None) -> None:
    """results.json, results.md, the per-dataset plots and (optionally) the README block."""
    write_json(out / "results.json", results)
    for ds in dict.fromkeys(r["dataset"] for r in results["rows"]):
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


def _run_one(
    dataset: str,
    head: str,
    cfg: TrainConfig,
    run_dir: Path,
    settings: dict[str, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    donor = run_dir.parent / "bof" / CHECKPOINT if head != "bof" else None
    data_dir = cfg.data_dir  # where the files are now (a reused run may have read them elsewhere)
    _, wall = ensure_trained(cfg, run_dir, progress=not args.quiet, donor=donor)
    if head not in args.heads:  # the bof run only provides the other heads' backbone
        return {}
    model, calibrations, cfg = load_model(run_dir / CHECKPOINT)
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
    history = load_checkpoint(run_dir / CHECKPOINT)["history"]
    _, test = load_dataset(cfg.dataset, data_dir, download=False)
    val = validation_split(cfg)  # the same seed, fraction and limit as training: never the test set
    log.info("comparing policies: %s / %s", dataset, head)
    t0 = time.perf_counter()
    comparison = compare_policies(
        model, calibrations, val, test, score=cfg.score, variant=cfg.variant, points=args.points, **settings
    )
    save_comparison(comparison, run_dir)
    write_report(run_dir)
    backbone_cfg = cfg if donor is None else load_model(donor)[2]
    schedule = {
        "backbone": cfg.model.backbone,
        "mode": "two-phase" if donor is None else "frozen (exits only, on the bof run's backbone)",
        "backbone_epochs": backbone_cfg.epochs,
        "exit_epochs": cfg.exit_epochs if donor is None else cfg.epochs,
        "config": cfg.to_dict(),
        "run_dir": f"{dataset}/{head}",  # relative to --out
        "wall": {
            **wall,
            "train_s_recorded": sum(h["seconds"] for h in history),
            "compare_s": time.perf_counter() - t0,
        },
    }
    return summary_row(dataset, head, comparison, schedule)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    readme: Path | None = args.write_readme
    if readme is not None:  # fail before hours of training, not after
        if not readme.is_file():
            raise SystemExit(f"--write-readme {readme}: no such file")
        replace_block(readme.read_text(encoding="utf-8"), "", str(readme))
    out: Path = args.out
    if args.render_only:
        path = out / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; run the benchmark first (without --render-only)")
        write_outputs(json.loads(path.read_text()), out, readme)
        print(f"wrote {out / 'results.md'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {**(QUICK if args.quick else FULL)}
    settings = {k: settings[k] for k in FULL}
    for key in FULL:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["throughput_batch"] = THROUGHPUT_BATCH
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python benchmarks/run_all.py " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "schedule": {},  # per dataset; each row also holds its run's full config
        "comparison": {**settings, "points": args.points},
        "batch_sizes": {"batch1": 1, "batched": THROUGHPUT_BATCH, "training": None},
        "platform": {
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "logical_cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "training_device": str(resolve_device("auto")),
        },
        "rows": [],
        "skipped": [],
        "wall_s": 0.0,
    }
    datasets = args.datasets or list(DATASETS)
    needed = ["bof", *[h for h in HEADS if h in args.heads and h != "bof"]]
    try:
        for dataset in datasets:
            root = _data_root(args.data_dir, dataset, several=len(datasets) > 1)
            try:
                load_dataset(dataset, root, download=False)
            except DataError as exc:
                print(f"skipped {dataset}: {exc}")
                results["skipped"].append({"dataset": dataset, "reason": str(exc)})
                continue
            base = base_config(dataset, root, args)
            results["batch_sizes"]["training"] = base.batch_size
            results["schedule"][dataset] = _schedule(base)
            for head in needed:
                run_dir = out / dataset / head
                cfg = head_config(base, head, out / dataset / "bof" / CHECKPOINT)
                row = _run_one(dataset, head, cfg, run_dir, settings, args)
                if row:
                    results["rows"].append(row)
                    results["wall_s"] = time.perf_counter() - t_start
                    write_json(out / "results.json", results)  # partial results survive an interruption
                    print(
                        f"{dataset} / {head}: full {_pct(row['final_accuracy'])}%, knee "
                        + (
                            f"{_pct(row['knee']['accuracy'])}% at {100 * row['knee']['relative_macs']:.1f}% MACs"
                            if row["knee"]
                            else "none"
                        )
                    )
    except BofexitsError as exc:
        raise SystemExit(f"run_all: {exc}") from exc
    results["wall_s"] = time.perf_counter() - t_start
    write_outputs(results, out, readme)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
