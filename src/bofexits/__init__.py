"""bofexits: Bag-of-Features early exits with a one-knob adaptive inference rule.

Map of the method: `bof` (the BoF layer), `exits` (hierarchical exit heads) and
`baseline_exits` (SDN / BranchyNet heads), `multiexit` (stages + exits over any backbone),
`backbones` (reference networks), `policies` (when to stop), `runtime` (real early exit),
`cost` (counted MACs), `data` / `datasets` (loaders), `training`, `sweep` / `compare` /
`report` (evaluation), `export` / `deploy` (staged ONNX and its torch-free runner), `cli`.

Names load on first use (PEP 562), so `import bofexits.deploy` (numpy + onnxruntime) and
`bofexits predict EXPORT_DIR` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` below imports on demand
    from .backbones import Backbone, create_backbone, list_backbones, register_backbone
    from .baseline_exits import ConvExits, PooledLinearExits
    from .bof import BoFPooling, bof_histogram, logistic_membership, rbf_membership, squared_distances
    from .build import build_model
    from .checkpoint import load_checkpoint, load_model, save_checkpoint
    from .claims import check_claims
    from .compare import compare_policies
    from .config import ModelConfig, TrainConfig
    from .cost import CostTable, count_macs, measure_costs
    from .datasets import list_datasets, load_dataset
    from .errors import (
        BofexitsError,
        CheckpointError,
        ConfigError,
        DataError,
        InputError,
        TargetUnreachableError,
    )
    from .exits import BoFExits, ExitHeads, aggregate_histograms
    from .export import export_onnx
    from .kmeans import kmeans
    from .metrics import accuracy, balance, exit_distribution, relative_compute
    from .multiexit import MultiExitNetwork, check_input
    from .offline import oracle, oracle_frontier, simulate
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
    from .torchscript import export_torchscript
    from .training import TrainResult, train

# Submodule -> the public names it defines (the single list `__all__` is built from).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "backbones": ("Backbone", "create_backbone", "list_backbones", "register_backbone"),
    "baseline_exits": ("ConvExits", "PooledLinearExits"),
    "bof": ("BoFPooling", "bof_histogram", "logistic_membership", "rbf_membership", "squared_distances"),
    "build": ("build_model",),
    "checkpoint": ("load_checkpoint", "load_model", "save_checkpoint"),
    "claims": ("check_claims",),
    "compare": ("compare_policies",),
    "config": ("ModelConfig", "TrainConfig"),
    "cost": ("CostTable", "count_macs", "measure_costs"),
    "datasets": ("list_datasets", "load_dataset"),
    "errors": (
        "BofexitsError",
        "CheckpointError",
        "ConfigError",
        "DataError",
        "InputError",
        "TargetUnreachableError",
    ),
    "exits": ("BoFExits", "ExitHeads", "aggregate_histograms"),
    "export": ("export_onnx",),
    "kmeans": ("kmeans",),
    "metrics": ("accuracy", "balance", "exit_distribution", "relative_compute"),
    "multiexit": ("MultiExitNetwork", "check_input"),
    "offline": ("oracle", "oracle_frontier", "simulate"),
    "policies": (
        "BudgetedThreshold",
        "CalibratedThreshold",
        "EntropyThreshold",
        "ExitCalibration",
        "ExitPolicy",
        "FullNetwork",
        "GlobalThreshold",
        "Patience",
        "SingleExit",
        "calibrated_thresholds",
        "confidence",
        "create_policy",
        "fit_budgeted_thresholds",
        "list_policies",
    ),
    "recipes": ("RECIPES", "recipe_for"),
    "runtime": ("AdaptiveRuntime", "ExitResult"),
    "torchscript": ("export_torchscript",),
    "training": ("TrainResult", "train"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
