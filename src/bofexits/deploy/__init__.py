"""Deployment: staged ONNX / TorchScript export, the torch-free onnxruntime runner, `predict`.

`bofexits.deploy` and `bofexits.deploy.runner` import only numpy (and onnxruntime when a runner
is built), so a serving machine needs no torch. The runner (`runner`) re-exports the manifest's
schema and checks (`manifest`, built from `_entries` and `_fields`), the rule in numpy (`rule`)
and the errors (`errors`), and loads each graph through `_sessions`; an ONNX export ships these
seven modules as `bofexits_deploy/`. The exporters (`onnx`, `torchscript`), what they share
(`_export`), the one-graph forms of the rule (`_compose`, `_onnx_rule`), the deployment facts
of a checkpoint (`info`) and `predict` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from bofexits.deploy.runner import *  # noqa: F403  (the torch-free runner is this package's face)
from bofexits.deploy.runner import __all__ as _RUNNER_ALL

_LAZY = {
    "DEFAULT_BETA": "info",
    "DeployInfo": "info",
    "ExportError": "_export",
    "deploy_info": "info",
    "export_onnx": "onnx",
    "export_torchscript": "torchscript",
}

__all__ = sorted({*_RUNNER_ALL, *_LAZY})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
