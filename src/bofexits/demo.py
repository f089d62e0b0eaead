"""`make demo`: train BoF exits on Fashion-MNIST, sweep the proposed rule with real early exit,
time it against the plain backbone, compare every exit policy side by side, and write
results.json, policies.json/csv, plots, report.md and report.html."""

from __future__ import annotations

import logging
from pathlib import Path

from bofexits._io import write_json
from bofexits.config import TrainConfig
from bofexits.data.registry import load_run_data
from bofexits.evaluation.compare import compare_policies, save_comparison
from bofexits.evaluation.sweep import sweep
from bofexits.reporting.report import write_report
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.loop import CHECKPOINT, train
from bofexits.training.tuning import validation_split

__all__ = ["DEMO_CONFIG", "run_demo"]

log = logging.getLogger(__name__)

DEMO_CONFIG = TrainConfig(dataset="fashion-mnist", mode="two-phase", epochs=10, exit_epochs=4)
EXTRA = (("max_prob", "quantile"), ("max_prob", "mean"), ("max_logit", "quantile"), ("max_logit", "mean"))


def run_demo(
    out: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = True,
    progress: bool = True,
    timing_samples: int = 500,
) -> Path:
    """Train (or reuse a finished checkpoint in `out`), evaluate, and return the report path."""
    out = Path(out)
    cfg = TrainConfig(**{**DEMO_CONFIG.__dict__, "epochs": epochs or DEMO_CONFIG.epochs})
    ckpt = out / CHECKPOINT
    done = ckpt.exists() and load_checkpoint(ckpt).get("complete", False)
    if not done:
        train(cfg, out, resume=resume and ckpt.exists(), progress=progress)
    model, calibrations, cfg = load_model(ckpt)
    history = load_checkpoint(ckpt)["history"]
    _, test = load_run_data(cfg)
    log.info("evaluating on %d test images", len(test))
    results = sweep(
        model,
        calibrations,
        test,
        score=cfg.score,
        variant=cfg.variant,
        extra=EXTRA,
        timing_samples=timing_samples,
    )
    results["dataset"] = cfg.dataset
    results["training"] = {
        "backbone": cfg.model.backbone,
        "epochs": len(history),
        "mode": cfg.mode,
        "calibration_split": cfg.calibration_split,
        "seconds": sum(h["seconds"] for h in history),
        "history": history,
    }
    write_json(out / "results.json", results)
    log.info("comparing every exit policy side by side")
    comparison = compare_policies(
        model,
        calibrations,
        validation_split(cfg, cfg.data_dir),
        test,
        score=cfg.score,
        variant=cfg.variant,
        timing_samples=min(timing_samples, 200),
    )
    save_comparison(comparison, out)
    return write_report(out)
