"""Command line: `bofexits train | evaluate | sweep | tune | demo | report | export | predict | ...`.

Tables for people on stdout, JSON for programs in the run folder, one-line errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bofexits.config import ModelConfig, TrainConfig, from_dict
from bofexits.errors import BofexitsError, ConfigError

__all__ = ["main"]

log = logging.getLogger("bofexits")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d, m = TrainConfig(), ModelConfig()
    g = p.add_argument_group("training")
    g.add_argument("--config", type=Path, help="JSON config (e.g. a run's config.json); flags override it")
    g.add_argument(
        "--dataset",
        help=f"dataset name (default {d.dataset}); its recipe (backbone, channels, classes, schedule, "
        "augmentation) sets the defaults",
    )
    g.add_argument(
        "--data-dir", help="folder holding the dataset files (else standard places, then download)"
    )
    g.add_argument("--mode", choices=["joint", "frozen", "two-phase"], help=f"default {d.mode}")
    g.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    g.add_argument("--exit-epochs", type=int, help=f"exit epochs in two-phase mode (default {d.exit_epochs})")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], help=f"default {d.optimizer}")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument(
        "--exit-lr", type=float, help=f"peak learning rate when only exits train (default {d.exit_lr})"
    )
    g.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    g.add_argument("--exit-weights", type=float, nargs="+", help="loss weight per exit, final last")
    g.add_argument(
        "--no-augment", dest="augment", action="store_false", default=None, help="no flips or crops"
    )
    g.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (default: the dataset's)")
    g.add_argument(
        "--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flips (digits)"
    )
    g.add_argument(
        "--val-fraction", type=float, help=f"held out of the training set (default {d.val_fraction})"
    )
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g.add_argument("--device", help="auto (GPU when present), cpu or cuda[:N]")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--calibration-split", choices=["train", "val"], help=f"default {d.calibration_split}")
    g.add_argument("--score", choices=["max_logit", "max_prob", "margin", "neg_entropy"])
    g.add_argument("--variant", choices=["mean", "quantile", "conditional"])
    g.add_argument("--backbone-checkpoint", help="trained run whose backbone frozen mode reuses")
    g.add_argument("--limit-train", type=int, help="use only the first N training images (quick runs)")
    g = p.add_argument_group("network")
    g.add_argument("--backbone", help=f"registered backbone (default {m.backbone}; see `bofexits backbones`)")
    g.add_argument("--widths", type=int, nargs="+", help="backbone stage widths")
    g.add_argument("--codewords", type=int, help=f"K, shared by all exits (default {m.codewords})")
    g.add_argument("--membership", choices=["rbf", "logistic"])
    g.add_argument(
        "--not-squared",
        dest="squared",
        action="store_false",
        default=None,
        help="RBF on distances instead of squared distances",
    )
    g.add_argument("--spatial-level", type=int, choices=[0, 1])
    g.add_argument("--reduce-channels", type=int)
    g.add_argument("--exit-pools", type=int, nargs="+", help="per-exit pre-pool factor")
    g.add_argument("--aggregation", choices=["mean", "sum", "none"])
    g.add_argument("--per-exit-classifiers", dest="shared_classifier", action="store_false", default=None)
    g.add_argument(
        "--exit-head",
        choices=["bof", "pooled", "conv"],
        help=f"exit heads: BoF, or the SDN (pooled) / BranchyNet (conv) baselines (default {m.exit_head})",
    )


_MODEL_KEYS = {
    "backbone",
    "widths",
    "codewords",
    "membership",
    "squared",
    "spatial_level",
    "reduce_channels",
    "exit_pools",
    "aggregation",
    "shared_classifier",
    "exit_head",
}


def resolve_config(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Defaults < the dataset's recipe (`bofexits.training.recipes`) < --config file < flags.

    The dataset is the --dataset flag, else the config file's, else the default's.
    """
    from bofexits.training.recipes import apply_recipe, recipe_for

    data = (base or TrainConfig()).to_dict()
    loaded: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {args.config} must hold a JSON object, like a run's config.json")
    dataset = getattr(args, "dataset", None) or loaded.get("dataset") or data["dataset"]
    data = apply_recipe(data, recipe_for(str(dataset)))
    if loaded:
        data = from_dict({**data, **loaded, "model": {**data["model"], **loaded.get("model", {})}}).to_dict()
    for key, value in vars(args).items():
        if value is None or key in (
            "config",
            "command",
            "func",
            "out",
            "resume",
            "quiet",
            "betas",
            "timing_samples",
            "timing_rounds",
            "points",
            "timed_points",
        ):
            continue
        if key in _MODEL_KEYS:
            data["model"][key] = value
        elif key in data:
            data[key] = value
    return from_dict(data)


def _cmd_train(args: argparse.Namespace) -> int:
    from bofexits.training.loop import train

    cfg = resolve_config(args)
    result = train(cfg, args.out, resume=args.resume, progress=not args.quiet)
    last = result.history[-1] if result.history else {}
    print(f"checkpoint: {result.checkpoint}")
    if last:
        print("validation accuracy per exit: " + " ".join(f"{a:.4f}" for a in last["val_acc"]))
    return 0


def _load_evaluation(args: argparse.Namespace) -> tuple[Any, Any, TrainConfig, Any]:
    """The checkpoint's network, calibrations and config, and its test set, for evaluate and sweep."""
    from bofexits.data.registry import load_run_data
    from bofexits.training.checkpoint import load_model

    model, calibrations, cfg = load_model(args.checkpoint)
    if not calibrations:
        raise ConfigError(
            f"{args.checkpoint} has no calibration (training did not finish); resume training first"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _, test = load_run_data(cfg, args.data_dir)
    return model, calibrations, cfg, test


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bofexits._io import write_json
    from bofexits.evaluation.sweep import sweep

    model, calibrations, cfg, test = _load_evaluation(args)
    score, variant = args.score or cfg.score, args.variant or cfg.variant
    results = sweep(
        model,
        calibrations,
        test,
        score=score,
        variant=variant,
        betas=args.betas,
        timing_samples=args.timing_samples,
        timing_rounds=args.timing_rounds,
    )
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    write_json(out / "results.json", results)
    print(format_points(results))
    print(f"results: {out / 'results.json'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bofexits.evaluation.compare import compare_policies, save_comparison
    from bofexits.reporting.report import write_report
    from bofexits.training.tuning import validation_split

    model, calibrations, cfg, test = _load_evaluation(args)
    comparison = compare_policies(
        model,
        calibrations,
        validation_split(cfg, args.data_dir),
        test,
        score=args.score or cfg.score,
        variant=args.variant or cfg.variant,
        points=args.points,
        timed_points=args.timed_points,
        timing_samples=args.timing_samples,
        timing_rounds=args.timing_rounds,
    )
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    paths = save_comparison(comparison, out)
    report = write_report(out)
    print(format_comparison(comparison))
    print(f"results: {paths[0]}, {paths[1]}; report: {report} and {report.with_suffix('.html')}")
    return 0


def format_comparison(comparison: dict[str, Any]) -> str:
    """A readable summary of a policy comparison: knee and matched compute per policy, then the claims."""
    levels = [f"{lv:g}" for lv in comparison["levels"]]

    def cell(p: dict[str, Any] | None) -> str:
        return "n/a" if p is None else f"{100 * p['accuracy']:.2f}@{100 * p['relative_macs']:.0f}%"

    head = f"{'policy':<34} {'knee acc@MACs':>14} {'bal':>5} " + " ".join(
        f"{'<=' + format(float(lv), '.0%'):>11}" for lv in levels
    )
    rows = [f"full network {100 * comparison['full_accuracy']:.2f}%; simulated from all exits", head]
    for fam in comparison["families"]:
        knee = fam["knee"]
        rows.append(
            f"{fam['label'][:34]:<34} {cell(knee):>14} {knee['balance'] if knee else float('nan'):>5.2f} "
            + " ".join(f"{cell(fam['at_levels'][lv]):>11}" for lv in levels)
        )
    for c in comparison.get("claims", []):
        rows.append(f"claim ({c['claim']}) {c['statement']}: {c['verdict']}")
    return "\n".join(rows)


def _cmd_tune(args: argparse.Namespace) -> int:
    from bofexits.training.checkpoint import update_checkpoint
    from bofexits.training.tuning import tune_on_validation

    result = tune_on_validation(
        args.checkpoint,
        variant=args.variant,
        max_drop=args.max_drop,
        budget=args.budget,
        latency_ms=args.latency_ms,
        data_dir=args.data_dir,
    )
    update_checkpoint(args.checkpoint, tuned=result.to_dict())
    lat = f", {result.val_latency_ms:.3f} ms" if result.val_latency_ms is not None else ""
    print(
        f"{result.target}: beta={result.beta:g} ({result.variant} rule on {result.score}); validation accuracy "
        f"{100 * result.val_accuracy:.2f}% (full {100 * result.val_full_accuracy:.2f}%) at "
        f"{100 * result.val_relative_macs:.1f}% of the MACs{lat}; stored in {args.checkpoint}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from bofexits.demo import run_demo

    report = run_demo(
        args.out, epochs=args.epochs, resume=True, progress=not args.quiet, timing_samples=args.timing_samples
    )
    print(Path(report).read_text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bofexits.reporting.report import write_report

    path = write_report(args.run_dir)
    print(f"report: {path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from bofexits.data.registry import list_datasets
    from bofexits.models.backbones import list_backbones
    from bofexits.policies import list_policies

    names = {"backbones": list_backbones, "datasets": list_datasets, "policies": list_policies}[
        args.command
    ]()
    print("\n".join(names))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from bofexits.deploy.onnx import export_onnx
    from bofexits.deploy.torchscript import export_torchscript

    opts = {"beta": args.beta, "score": args.score, "variant": args.variant, "data_dir": args.data_dir}
    if args.format == "onnx":
        out = export_onnx(
            args.checkpoint,
            args.out_dir,
            exporter=args.onnx_exporter,
            layout=args.layout,
            overwrite=args.force,
            **opts,
        )
    else:
        out = export_torchscript(args.checkpoint, args.out_dir, overwrite=args.force, **opts)
    rule = json.loads((out / "manifest.json").read_text())["policy"]
    print(
        f"{args.format} export: {out} ({rule['variant']} rule on {rule['score']}, beta={rule['beta']:g} "
        f"({rule['beta_source']}))"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from bofexits.deploy.predict import format_predictions, predict_files

    predictions, about = predict_files(
        args.source, args.images, beta=args.beta, threads=args.threads, data_dir=args.data_dir
    )
    print(format_predictions(predictions, about, as_json=args.json))
    return 1 if any(p.error is not None for p in predictions) else 0


def format_points(results: dict[str, Any]) -> str:
    """A readable table of a sweep: one row per knob value."""
    timing = {p["beta"]: p for p in results.get("timing", {}).get("per_beta", [])}
    head = f"{'beta':>6} {'acc %':>7} {'MACs %':>7} {'balance':>7}  {'exit fractions':<26} {'b1 x':>6} {'b256 x':>6}"
    rows = [
        f"{results['variant']} rule on {results['score']}; full network {100 * results['full_accuracy']:.2f}%",
        head,
    ]
    for p in results["points"]:
        t = timing.get(p["beta"], {})
        fr = " ".join(f"{f:.2f}" for f in p["exit_fractions"])
        rows.append(
            f"{p['beta']:>6g} {100 * p['accuracy']:>7.2f} {100 * p['relative_macs']:>7.1f} "
            f"{p['balance']:>7.3f}  {fr:<26} {t.get('batch1_speedup', float('nan')):>6.2f} "
            f"{t.get('batched_speedup', float('nan')):>6.2f}"
        )
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bofexits", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a multi-exit network and calibrate its exit rule")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("evaluate", help="real early exit on the test set at several beta values, timed")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, help="where results.json goes (default: the checkpoint's folder)")
    p.add_argument("--data-dir")
    p.add_argument("--score", choices=["max_logit", "max_prob", "margin", "neg_entropy"])
    p.add_argument("--variant", choices=["mean", "quantile", "conditional"])
    p.add_argument("--betas", type=float, nargs="+", help="knob values (default: a range for the variant)")
    p.add_argument("--timing-samples", type=int, default=500, help="images timed at batch 1 (0: no timing)")
    p.add_argument("--timing-rounds", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch CPU threads for evaluation and timing")
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser(
        "sweep", help="every exit policy over its knob, side by side, with timing; writes policies.json/csv"
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default: the checkpoint's folder)")
    p.add_argument("--data-dir")
    p.add_argument("--score", choices=["max_logit", "max_prob", "margin", "neg_entropy"])
    p.add_argument("--variant", choices=["mean", "quantile", "conditional"])
    p.add_argument("--points", type=int, default=101, help="knob values per threshold policy (simulated)")
    p.add_argument(
        "--timed-points",
        type=int,
        default=9,
        help="points per policy run for real and timed, plus knee and matched ones (0: every point)",
    )
    p.add_argument("--timing-samples", type=int, default=200, help="images timed at batch 1 (0: no timing)")
    p.add_argument("--timing-rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser(
        "tune", help="pick beta on the validation split for a target and store it in the checkpoint"
    )
    p.add_argument("checkpoint", type=Path)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--max-drop", type=float, help="largest accuracy drop vs the full network, in pp")
    g.add_argument("--budget", type=float, help="largest mean compute, as a fraction of the backbone's MACs")
    g.add_argument("--latency-ms", type=float, help="largest mean batch-1 latency in ms (measured here)")
    p.add_argument("--variant", choices=["mean", "quantile", "conditional"])
    p.add_argument("--data-dir")
    p.set_defaults(func=_cmd_tune)
    p = sub.add_parser("demo", help="train on Fashion-MNIST, evaluate adaptive inference, write a report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--epochs", type=int, help="override the demo's training epochs")
    p.add_argument("--timing-samples", type=int, default=500)
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("report", help="render report.md and plots from a run folder's results.json")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser(
        "export", help="write a deployable export: staged ONNX graphs + manifest, or TorchScript"
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out_dir", type=Path, help="export folder (written atomically)")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument(
        "--beta", type=float, help="the knob (default: the tuned one, else 0.4 quantile / 1.0 mean)"
    )
    p.add_argument("--score", choices=["max_logit", "max_prob", "margin", "neg_entropy"])
    p.add_argument("--variant", choices=["mean", "quantile", "conditional"])
    p.add_argument(
        "--onnx-exporter",
        choices=["dynamo", "legacy"],
        default="dynamo",
        help="dynamo (default: leaner graphs) or legacy (TorchScript-based, exports ~100x faster)",
    )
    p.add_argument(
        "--layout", choices=["fused", "separate"], default="fused", help="graphs per stage+exit pair"
    )
    p.add_argument("--force", action="store_true", help="replace an existing export folder")
    p.add_argument("--data-dir", help="training data (class names and normalisation are read from it)")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("predict", help="classify PNG/JPEG files with a checkpoint or an ONNX export folder")
    p.add_argument("source", type=Path, help="checkpoint.pt, or a folder written by `bofexits export`")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON for programs")
    p.add_argument("--beta", type=float, help="override the knob")
    p.add_argument("--threads", type=int, help="inference threads")
    p.add_argument("--data-dir", help="training data, for a checkpoint (class names and normalisation)")
    p.set_defaults(func=_cmd_predict)
    for name in ("backbones", "datasets", "policies"):
        sub.add_parser(name, help=f"list registered {name}").set_defaults(func=_cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except BofexitsError as exc:
        print(f"bofexits: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bofexits: interrupted; `--resume` continues from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
