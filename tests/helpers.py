"""Helpers several test files share that are not fixtures: loading a benchmark script, a tiny
checkpoint on disk, a stateful test policy. (`pythonpath = ["."]` in pyproject.toml makes
`from tests.helpers import ...` work.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from bofexits.policies import ExitCalibration

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """benchmarks/NAME.py as the module `NAME_benchmark`, with benchmarks/ importable for its helpers."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # as when run as `python benchmarks/NAME.py`
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_checkpoint(path: Path, data_dir: Path, **train_options: Any) -> Path:
    """A small vgg28 (untrained: exports and timing do not care), calibrated on the fake data, at `path`.

    `train_options` set `TrainConfig` fields (e.g. `variant="quantile"`, which needs no labels).
    """
    from bofexits.config import ModelConfig, TrainConfig
    from bofexits.data.registry import load_dataset
    from bofexits.models.build import build_model
    from bofexits.training.checkpoint import save_checkpoint

    cfg = TrainConfig(
        data_dir=str(data_dir), model=ModelConfig(widths=[4, 8, 8, 16], codewords=8), **train_options
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    train, _ = load_dataset("fashion-mnist", data_dir)
    x, _ = next(train.batches(64, shuffle=False))
    with torch.no_grad():
        cal = fit_calibration(model(x), cfg.score)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": cfg.to_dict(), "model": model.state_dict(), "calibration": {cfg.score: cal.to_dict()}}
    save_checkpoint(path, payload)
    return path


def tiny_run_with_export(root: Path, data_dir: Path, pngs: int) -> dict[str, Any]:
    """A tiny quantile-rule checkpoint, its ONNX export and the first `pngs` test images as PNGs, in `root`."""
    from PIL import Image

    from bofexits.data.registry import load_dataset
    from bofexits.deploy.onnx import export_onnx

    ckpt = write_tiny_checkpoint(root / "checkpoint.pt", data_dir, variant="quantile")
    export = export_onnx(ckpt, root / "export", exporter="legacy")
    _, test = load_dataset("fashion-mnist", data_dir)
    files = []
    for i in range(pngs):
        files.append(root / f"img{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), mode="L").save(files[-1])
    return {"root": root, "ckpt": ckpt, "export": export, "test": test, "pngs": files}


def by_id_policy() -> Any:
    """A stateful policy that is no threshold rule: stops sample k (its input position) at exit k % 4."""
    from bofexits.policies.base import ExitPolicy

    class ByIdPolicy(ExitPolicy):
        name = "by-id"

        def begin(self, batch_size: int) -> torch.Tensor:
            return torch.arange(batch_size)

        def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
            assert state.shape[0] == logits.shape[0]
            return state % 4 == index, state

    return ByIdPolicy()


def fit_calibration(outputs: list[torch.Tensor], score: str = "max_prob") -> ExitCalibration:
    """Calibration from all S exits' outputs, with the final exit's predictions as labels.

    With labels the calibration carries every variant's table, the default `accuracy` included.
    """
    return ExitCalibration.fit(outputs[:-1], score, outputs[-1].argmax(1))


def tiny_facts() -> Any:
    """The `ModelFacts` a server reports for the tiny network of tests/conftest.py (quantile rule)."""
    from bofexits.serving import ModelFacts
    from tests.conftest import TINY_CLASSES, TINY_SHAPE

    return ModelFacts(
        "pytorch", "cpu", [str(i) for i in range(TINY_CLASSES)], TINY_SHAPE, [0.0, 0.0], [1.0, 1.0], None,
        "max_prob", "quantile",
    )  # fmt: skip
