"""Training multi-exit networks and choosing their knob.

* `loop`: the epochs of joint, frozen-backbone and two-phase training, checkpointing each
  under a run-folder lock, calibration at the end (docs/method.md §4). Its parts:
  `run` (set-up and checks), `loss` (phases and the weighted loss), `optim` (optimiser and
  schedule), `codebooks` (k-means), `calibrate` (logits over a split, gathered across ranks)
  and `progress` (start, resume and the checkpoint writes).
* `splits`: a run's data, fitted to its network, and its train/validation/test split.
* `distributed`: torchrun data parallelism: process group, per-epoch shard of each global
  batch, collectives that are no-ops in one process (docs/distributed.md).
* `checkpoint`: one safely loaded file (no pickled code) holding weights, config and calibration.
* `tuning`: beta for a target (accuracy drop, compute or latency budget) on the validation split.

The per-dataset recipes moved to `bofexits.recipes` (the config layers them); their names
are re-exported here.
"""

from __future__ import annotations

from bofexits.recipes import RECIPES, recipe_for
from bofexits.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from bofexits.training.loop import TrainResult, train
from bofexits.training.tuning import TuneResult, tune_beta, tune_on_validation

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
