"""`bofexits demo` / `make demo`: the command line's verbs in a row on Fashion-MNIST.

`train` (BoF exits, two-phase and joint fine-tuning, the Fashion-MNIST recipe), `sweep`
(the proposed rule's knob with real early exit, timed against the plain backbone),
`compare` (every exit policy side by side) and
`report`: writes results.json, policies.json/csv, plots, report.md and report.html.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bofexits.config import TrainConfig, resolve_config
from bofexits.evaluation.compare import compare_policies
from bofexits.evaluation.sweep import TrainingInfo, sweep
from bofexits.reporting.report import write_results
from bofexits.training.checkpoint import load_checkpoint, load_model
from bofexits.training.loop import CHECKPOINT, train
from bofexits.training.splits import load_run_data
from bofexits.training.tuning import validation_split

__all__ = ["DEMO_CONFIG", "run_demo"]

log = logging.getLogger(__name__)

DEMO_CONFIG: TrainConfig = resolve_config({"dataset": "fashion-mnist", "mode": "two-phase"})
"""What `make demo` trains: the Fashion-MNIST recipe (`recipes.py`), two-phase with fine-tuning."""
EXTRA = (("max_prob", "quantile"), ("max_prob", "mean"), ("max_logit", "quantile"), ("max_logit", "mean"))


def run_demo(
    out: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = True,
    progress: bool = True,
    timing_samples: int = 500,
) -> Path:
    """Train (or reuse a finished checkpoint in `out`), sweep, compare, and return the report path."""
    out = Path(out)
    cfg = dataclasses.replace(DEMO_CONFIG, epochs=epochs or DEMO_CONFIG.epochs)
    ckpt = _trained(cfg, out, resume=resume, progress=progress)
    model, calibrations, cfg = load_model(ckpt)
    _, test = load_run_data(cfg)
    log.info("sweeping the knob on %d test images", len(test))
    result = sweep(
        model,
        calibrations,
        test,
        score=cfg.score,
        variant=cfg.variant,
        extra=EXTRA,
        timing_samples=timing_samples,
    )
    result.dataset = cfg.dataset
    result.training = _training_info(cfg, ckpt)
    log.info("comparing every exit policy side by side")
    comparison = compare_policies(
        model,
        calibrations,
        validation_split(cfg, cfg.data_dir),
        test,
        score=cfg.score,
        variant=cfg.variant,
        timing_samples=timing_samples,
    )
    write_results(out, "demo", sweep=result, comparison=comparison)  # one set: never half old, half new
    return out / "report.md"


def _trained(cfg: TrainConfig, out: Path, *, resume: bool, progress: bool) -> Path:
    """The checkpoint in `out`, trained (or its interrupted run resumed) unless already complete."""
    ckpt = out / CHECKPOINT
    if not (ckpt.exists() and load_checkpoint(ckpt).get("complete", False)):
        train(cfg, out, resume=resume and ckpt.exists(), progress=progress)
    return ckpt


def _training_info(cfg: TrainConfig, ckpt: Path) -> TrainingInfo:
    """How the demo network was trained, for the top of the report."""
    history = load_checkpoint(ckpt)["history"]
    return TrainingInfo(
        backbone=cfg.model.backbone,
        epochs=len(history),
        mode=cfg.mode,
        calibration_split=cfg.calibration_split,
        seconds=sum(h["seconds"] for h in history),
        history=history,
    )
