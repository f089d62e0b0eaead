"""The names every option may take, and the defaults all entry points share.

One torch-free home, read by the config and the command line (which must not import torch:
`bofexits predict EXPORT_DIR` runs without it) and by the library modules that act on the
names. A `Literal` type and its tuple are defined together, so a type checker and a runtime
check see the same names.

The rule's defaults (`DEFAULT_SCORE`, `DEFAULT_VARIANT`: the accuracy rule on max_prob,
docs/decisions.md) are used by `bofexits.sweep`, `compare_policies`, `tune_beta`, the config
and the command line, so a Python user and a CLI user get the same rule.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "AGGREGATIONS",
    "CALIBRATION_SPLITS",
    "DEFAULT_SCORE",
    "DEFAULT_VARIANT",
    "EXIT_HEADS",
    "GRID_POINTS",
    "MEMBERSHIPS",
    "MODES",
    "OPTIMIZERS",
    "SCORES",
    "VARIANTS",
    "Aggregation",
    "CalibrationSplit",
    "ExitHead",
    "Membership",
    "Mode",
    "Optimizer",
    "Score",
    "Variant",
]

Score = Literal["max_logit", "max_prob", "margin", "neg_entropy"]
SCORES: tuple[str, ...] = get_args(Score)
Variant = Literal["mean", "quantile", "conditional", "accuracy"]
VARIANTS: tuple[str, ...] = get_args(Variant)
DEFAULT_SCORE: Final[Score] = "max_prob"
"""The confidence score of the rule when none is named."""
DEFAULT_VARIANT: Final[Variant] = "accuracy"
"""The variant of the rule when none is named: beta reads as the exit's calibrated accuracy."""

Membership = Literal["rbf", "logistic"]
MEMBERSHIPS: tuple[str, ...] = get_args(Membership)
Aggregation = Literal["mean", "sum", "none"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
ExitHead = Literal["bof", "pooled", "conv"]
EXIT_HEADS: tuple[str, ...] = get_args(ExitHead)

Mode = Literal["joint", "frozen", "two-phase"]
MODES: tuple[str, ...] = get_args(Mode)
Optimizer = Literal["adamw", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
CalibrationSplit = Literal["train", "val"]
CALIBRATION_SPLITS: tuple[str, ...] = get_args(CalibrationSplit)

GRID_POINTS: Final = 201
"""Knob values per policy that a comparison simulates and tuning searches: one grid, so the
comparison's knee and `bofexits tune --max-drop` pick from the same betas (decisions.md:
tuning's 201, not the comparison's former 101, which moved 71 of 176 tuned choices)."""
