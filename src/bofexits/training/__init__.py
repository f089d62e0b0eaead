"""Training multi-exit networks and choosing their knob.

* `loop`: joint, frozen-backbone and two-phase training, k-means codebooks, resumable
  checkpoints under a run-folder lock, calibration at the end (docs/method.md §4).
* `distributed`: torchrun data parallelism: process group, per-epoch shard of each global
  batch, collectives that are no-ops in one process (docs/distributed.md).
* `checkpoint`: one safely loaded file (no pickled code) holding weights, config and calibration.
* `recipes`: per-dataset defaults (backbone, channels, schedule, augmentation).
* `tuning`: beta for a target (accuracy drop, compute or latency budget) on the validation split.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # names load on first use: `config` imports `recipes`, which must not pull in the loop
    from bofexits.training.checkpoint import load_checkpoint, load_model, save_checkpoint
    from bofexits.training.loop import TrainResult, train
    from bofexits.training.recipes import RECIPES, recipe_for
    from bofexits.training.tuning import TuneResult, tune_beta, tune_on_validation

_EXPORTS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("load_checkpoint", "load_model", "save_checkpoint"),
    "loop": ("TrainResult", "train"),
    "recipes": ("RECIPES", "recipe_for"),
    "tuning": ("TuneResult", "tune_beta", "tune_on_validation"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "RECIPES",
    "TrainResult",
    "TuneResult",
    "load_checkpoint",
    "load_model",
    "recipe_for",
    "save_checkpoint",
    "train",
    "tune_beta",
    "tune_on_validation",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
