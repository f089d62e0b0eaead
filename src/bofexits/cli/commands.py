"""One function per verb: call one library function, print for people, return the exit code.

Each takes its verb's parsed `argparse.Namespace` (grammar in `bofexits.cli._parser`). Library
imports happen inside, so `bofexits predict EXPORT_DIR` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from bofexits._io import ensure_writable_dir
from bofexits.config import TrainConfig, config_keys, resolve_config
from bofexits.errors import ConfigError

__all__ = [
    "compare",
    "config_from_args",
    "demo",
    "export",
    "list_names",
    "predict",
    "report",
    "serve",
    "sweep",
    "train",
    "tune",
]


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from `train`'s flags: every flag named after a config key, and --config.

    The keys come from the config's dataclass fields (`config_keys`), so a new field needs
    only a flag of the same name; unset flags (None) leave the layers below them alone.
    """
    keys = config_keys()
    flags = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    return resolve_config(flags, config_file=args.config)


def train(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bofexits.training.distributed import world_from_env
    from bofexits.training.loop import train

    cfg = config_from_args(args)
    timeout = timedelta(seconds=args.dist_timeout)
    result = train(cfg, args.out, resume=args.resume, progress=not args.quiet, dist_timeout=timeout)
    if not world_from_env(os.environ).is_main:  # under torchrun rank 0 alone reports
        return 0
    last = result.history[-1] if result.history else {}
    print(f"checkpoint: {result.checkpoint}")
    if last:
        print("validation accuracy per exit: " + " ".join(f"{a:.4f}" for a in last["val_acc"]))
    return 0


def _device(args: argparse.Namespace) -> Any:
    """The verb's `torch.device`; a GPU that is not there fails here, before any work (nothing is created)."""
    from bofexits.devices import resolve_device

    return resolve_device(args.device)


def _out_dir(args: argparse.Namespace) -> Path:
    """Where sweep and compare write: --out, else the checkpoint's folder."""
    return Path(args.out) if args.out else Path(args.checkpoint).parent


def _load_evaluation(args: argparse.Namespace) -> tuple[Any, Any, TrainConfig, Any, Any]:
    """The checkpoint's network, calibrations and config, its test set and the device, for sweep and compare."""
    from bofexits.training.checkpoint import load_model
    from bofexits.training.splits import load_run_data

    device = _device(args)  # first: a missing GPU leaves no output folder behind
    if args.out:  # before the evaluation, not after it
        ensure_writable_dir(args.out)
    model, calibrations, cfg = load_model(args.checkpoint)
    if not args.out:  # the checkpoint's folder, checked once the checkpoint is known to be there
        ensure_writable_dir(_out_dir(args))
    if not calibrations:
        raise ConfigError(
            f"{args.checkpoint} has no calibration (training did not finish); resume training first"
        )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    _, test = load_run_data(cfg, args.data_dir)
    return model, calibrations, cfg, test, device


def sweep(args: argparse.Namespace) -> int:
    from bofexits.evaluation.sweep import sweep
    from bofexits.reporting.report import write_results
    from bofexits.reporting.tables import format_points

    model, calibrations, cfg, test, device = _load_evaluation(args)
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
        device=device,
    )
    out = write_results(_out_dir(args), "sweep", sweep=results)
    print(format_points(results))
    print(f"results: {out / 'results.json'}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from bofexits.evaluation.compare import compare_policies
    from bofexits.reporting.report import write_results
    from bofexits.reporting.tables import format_comparison
    from bofexits.training.tuning import validation_split

    model, calibrations, cfg, test, device = _load_evaluation(args)
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
        device=device,
    )
    out = write_results(_out_dir(args), "compare", comparison=comparison)
    print(format_comparison(comparison))
    print(
        f"results: {out / 'policies.json'}, {out / 'policies.csv'}; report: {out / 'report.md'} and "
        f"{out / 'report.html'}"
    )
    return 0


def tune(args: argparse.Namespace) -> int:
    from bofexits._io import RunLock, real_path
    from bofexits.training.checkpoint import load_checkpoint, update_checkpoint
    from bofexits.training.tuning import tune_on_validation

    device = _device(args)
    load_checkpoint(args.checkpoint)  # a missing or broken file is named before anything is created
    # tune rewrites the checkpoint: lock the folder of the file itself (a symlink resolved), so two
    # tunes, or a tune and a train, on one checkpoint never both "store" and lose one result
    owner = real_path(args.checkpoint).parent
    with RunLock(owner, busy_hint="wait for that run to finish: it writes this checkpoint too"):
        result = tune_on_validation(
            args.checkpoint,
            variant=args.variant,
            max_drop_pp=args.max_drop,
            budget=args.budget,
            latency_ms=args.latency_ms,
            data_dir=args.data_dir,
            device=device,
        )
        update_checkpoint(args.checkpoint, tuned=result.to_dict())
    lat = f", {result.val_latency_ms:.3f} ms on {result.device}" if result.val_latency_ms is not None else ""
    print(
        f"{result.target}: beta={result.beta:g} ({result.variant} rule on {result.score}); validation accuracy "
        f"{100 * result.val_accuracy:.2f}% (full {100 * result.val_full_accuracy:.2f}%) at "
        f"{100 * result.val_relative_macs:.1f}% of the MACs{lat}; stored in {args.checkpoint}"
    )
    return 0


def place(args: argparse.Namespace) -> int:
    from bofexits._io import ensure_writable_dir
    from bofexits.training.checkpoint import load_checkpoint
    from bofexits.training.place import place

    source = Path(args.checkpoint).absolute().parent
    out = args.out if args.out else source.with_name(source.name + "-placed")
    ensure_writable_dir(out)  # an --out that cannot be written is named before any work
    load_checkpoint(args.checkpoint)  # as is a missing or broken checkpoint
    result = place(
        args.checkpoint,
        out,
        epochs=args.epochs,
        retrain_epochs=args.retrain_epochs,
        cost=args.cost or "macs",
        data_dir=args.data_dir,
        threads=args.threads,
        points=args.points,
    )
    print("candidate  unit        map          backbone%  head MACs  head ms  val acc alone")
    for i, c in enumerate(result.candidates):
        mark = "*" if i in result.kept else " "
        print(
            f"{mark} {c.point:>7}  {c.unit:<10}  {'x'.join(map(str, c.map_shape)):<11}  {100 * c.backbone_share:8.1f}  "
            f"{c.head_macs:9d}  {c.head_ms:7.3f}  {100 * c.val_accuracy:6.2f}%"
        )
    best = result.chosen
    print(
        f"kept exits after units {result.exit_points} ({result.subsets_scored} subsets scored, cost={result.cost}); "
        f"validation knee at {100 * best.knee_macs:.1f}% of the MACs"
    )
    if result.default is not None:
        print(f"the backbone's default exits: validation knee at {100 * result.default.knee_macs:.1f}% of the MACs")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from bofexits.demo import run_demo

    report = run_demo(
        args.out, epochs=args.epochs, resume=True, progress=not args.quiet, timing_samples=args.timing_samples
    )
    print(Path(report).read_text())
    return 0


def report(args: argparse.Namespace) -> int:
    from bofexits.reporting.report import write_report

    path = write_report(args.run_dir)
    print(f"report: {path}")
    return 0


def list_names(args: argparse.Namespace) -> int:
    print("\n".join(args.names))
    return 0


def export(args: argparse.Namespace) -> int:
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


def predict(args: argparse.Namespace) -> int:
    from bofexits.deploy.predict import format_predictions
    from bofexits.serving.bulk import predict_images

    predictions, about = predict_images(  # files, folders and globs through the serving engine
        args.source,
        args.images,
        beta=args.beta,
        threads=args.threads,
        data_dir=args.data_dir,
        device=args.device,
        max_batch=args.max_batch,
    )
    print(format_predictions(predictions, about, as_json=args.json))
    return 1 if any(p.error is not None for p in predictions) else 0


def serve(args: argparse.Namespace) -> int:
    from bofexits.serving.server import ServeOptions, run_server

    opts = ServeOptions(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body=args.max_body,
        device=args.device,
        beta=args.beta,
        threads=args.threads,
        data_dir=args.data_dir,
        latency_slo_ms=args.latency_slo_ms,
        slo_min_beta=args.slo_min_beta,
        api_key=args.api_key,
    )
    if args.ray:
        from bofexits.serving.ray_app import run_ray

        return run_ray(args.source, opts, replicas=args.replicas)
    return run_server(args.source, opts)
