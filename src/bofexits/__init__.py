"""bofexits: Bag-of-Features early exits with a one-knob adaptive inference rule.

The subpackages are the method's roles (docs/architecture.md): `models` (the BoF layer,
exit heads, the multi-exit network, backbones), `policies` (when to stop), `inference` (real
early exit and its offline simulation), `evaluation` (cost, timing, the knob sweep, the policy
comparison, the paper's claims), `reporting`, `deploy` (export and the torch-free runner),
`training`, `data`, `cli`. The public names below are re-exported here.

Names load on first use (PEP 562), so `import bofexits.deploy` (numpy + onnxruntime) and
`bofexits predict EXPORT_DIR` never import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` below imports on demand
    from .config import ModelConfig, TrainConfig
    from .data.registry import list_datasets, load_dataset
    from .deploy.onnx import export_onnx
    from .deploy.torchscript import export_torchscript
    from .errors import (
        BofexitsError,
        CheckpointError,
        ConfigError,
        DataError,
        InputError,
        TargetUnreachableError,
    )
    from .evaluation.compare import compare_policies
    from .evaluation.comparison import Comparison
    from .evaluation.cost import CostTable, count_macs, measure_costs
    from .evaluation.metrics import accuracy, balance, exit_distribution, relative_compute
    from .evaluation.points import Point
    from .evaluation.sweep import Sweep, sweep
    from .inference.gpu import CudaAdaptiveRuntime
    from .inference.offline import oracle, oracle_frontier, simulate
    from .inference.runtime import AdaptiveRuntime, ExitResult, StepOutput
    from .models.backbones import Backbone, create_backbone, list_backbones, register_backbone
    from .models.baseline_exits import ConvExits, PooledLinearExits
    from .models.bof import BoFPooling, bof_histogram, logistic_membership, rbf_membership, squared_distances
    from .models.build import build_model
    from .models.exits import BoFExits, ExitHeads, aggregate_histograms
    from .models.kmeans import kmeans
    from .models.multiexit import MultiExitNetwork, check_input
    from .models.vision import attach
    from .options import DEFAULT_SCORE, DEFAULT_VARIANT
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
    from .reporting.claims import check_claims
    from .serving.engine import Engine
    from .serving.load import open_stages
    from .training.checkpoint import load_checkpoint, load_model, save_checkpoint
    from .training.loop import TrainResult, train
    from .training.place import Placement, place

# Submodule -> the public names it defines (the single list `__all__` is built from).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "models.backbones": ("Backbone", "create_backbone", "list_backbones", "register_backbone"),
    "models.baseline_exits": ("ConvExits", "PooledLinearExits"),
    "models.bof": ("BoFPooling", "bof_histogram", "logistic_membership", "rbf_membership", "squared_distances"),
    "models.build": ("build_model",),
    "training.checkpoint": ("load_checkpoint", "load_model", "save_checkpoint"),
    "reporting.claims": ("check_claims",),
    "evaluation.compare": ("compare_policies",),
    "evaluation.comparison": ("Comparison",),
    "evaluation.points": ("Point",),
    "evaluation.sweep": ("Sweep", "sweep"),
    "config": ("ModelConfig", "TrainConfig"),
    "evaluation.cost": ("CostTable", "count_macs", "measure_costs"),
    "data.registry": ("list_datasets", "load_dataset"),
    "errors": (
        "BofexitsError",
        "CheckpointError",
        "ConfigError",
        "DataError",
        "InputError",
        "TargetUnreachableError",
    ),
    "models.exits": ("BoFExits", "ExitHeads", "aggregate_histograms"),
    "deploy.onnx": ("export_onnx",),
    "models.kmeans": ("kmeans",),
    "evaluation.metrics": ("accuracy", "balance", "exit_distribution", "relative_compute"),
    "models.multiexit": ("MultiExitNetwork", "check_input"),
    "models.vision": ("attach",),
    "inference.offline": ("oracle", "oracle_frontier", "simulate"),
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
    "options": ("DEFAULT_SCORE", "DEFAULT_VARIANT"),
    "inference.gpu": ("CudaAdaptiveRuntime",),
    "deploy.torchscript": ("export_torchscript",),
    "training.loop": ("TrainResult", "train"),
    "training.place": ("Placement", "place"),
    "inference.runtime": ("AdaptiveRuntime", "ExitResult", "StepOutput"),
    "serving.engine": ("Engine",),
    "serving.load": ("open_stages",),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.2.0"
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
