"""bofexits: Bag-of-Features early exits with a one-knob adaptive inference rule.

Map of the method: `bof` (the BoF layer), `exits` (hierarchical exit heads), `multiexit`
(stages + exits over any backbone), `backbones` (reference networks), `policies` (when to
stop), `runtime` (real early exit), `cost` (counted MACs), `data` (loaders), `training`,
`sweep` / `report` (evaluation), `cli`.
"""

from __future__ import annotations

from .backbones import Backbone, create_backbone, list_backbones, register_backbone
from .baseline_exits import ConvExits, PooledLinearExits
from .bof import BoFPooling, bof_histogram, logistic_membership, rbf_membership, squared_distances
from .build import build_model
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .config import ModelConfig, TrainConfig
from .cost import CostTable, count_macs, measure_costs
from .datasets import list_datasets, load_dataset
from .errors import BofexitsError, CheckpointError, ConfigError, DataError, InputError, TargetUnreachableError
from .exits import BoFExits, ExitHeads, aggregate_histograms
from .kmeans import kmeans
from .metrics import accuracy, balance, exit_distribution, relative_compute
from .multiexit import MultiExitNetwork, check_input
from .offline import oracle, simulate
from .policies import (
    BudgetedThreshold,
    CalibratedThreshold,
    EntropyThreshold,
    ExitCalibration,
    ExitPolicy,
    FullNetwork,
    GlobalThreshold,
    Patience,
    SingleExit,
    calibrated_thresholds,
    confidence,
    create_policy,
    fit_budgeted_thresholds,
    list_policies,
)
from .recipes import RECIPES, recipe_for
from .runtime import AdaptiveRuntime, ExitResult
from .training import TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "AdaptiveRuntime",
    "Backbone",
    "BoFExits",
    "BoFPooling",
    "BofexitsError",
    "BudgetedThreshold",
    "CalibratedThreshold",
    "CheckpointError",
    "ConfigError",
    "ConvExits",
    "CostTable",
    "DataError",
    "EntropyThreshold",
    "ExitCalibration",
    "ExitHeads",
    "ExitPolicy",
    "ExitResult",
    "FullNetwork",
    "GlobalThreshold",
    "InputError",
    "ModelConfig",
    "MultiExitNetwork",
    "Patience",
    "PooledLinearExits",
    "RECIPES",
    "SingleExit",
    "TargetUnreachableError",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "aggregate_histograms",
    "balance",
    "bof_histogram",
    "build_model",
    "calibrated_thresholds",
    "check_input",
    "confidence",
    "count_macs",
    "create_backbone",
    "create_policy",
    "exit_distribution",
    "fit_budgeted_thresholds",
    "kmeans",
    "list_backbones",
    "list_datasets",
    "list_policies",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "logistic_membership",
    "measure_costs",
    "oracle",
    "rbf_membership",
    "recipe_for",
    "register_backbone",
    "relative_compute",
    "save_checkpoint",
    "simulate",
    "squared_distances",
    "train",
]
