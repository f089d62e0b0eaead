"""Open what `bofexits serve` and `bofexits predict` serve: a checkpoint (PyTorch) or an ONNX export.

An export folder never imports torch here, as for `bofexits.deploy.predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bofexits.devices import check_device_name
from bofexits.errors import CheckpointError
from bofexits.serving.stages import ModelFacts, OnnxStages, StageBackend

__all__ = ["open_stages"]


def open_stages(
    source: str | Path,
    *,
    beta: float | None = None,
    threads: int | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> StageBackend:
    """The staged model behind a checkpoint file or an ONNX export folder, as a `StageBackend`.

    Args:
        source: checkpoint.pt (PyTorch stages) or a folder written by `bofexits export` (onnxruntime).
        beta: the knob (default: the tuned one, else the rule's default).
        threads: intra-op threads (torch, or each onnxruntime session).
        data_dir: training data, for a checkpoint without class names or normalisation.
        device: auto, cpu, cuda or cuda:N (None: the CPU).

    Raises:
        CheckpointError: a missing source, or a TorchScript export.
        ConfigError: a device that is not there, a beta outside the rule's range.
    """
    source = Path(source)
    name = "cpu" if device is None else check_device_name(str(device))
    if source.is_dir():
        return _onnx(source, beta, threads, name)
    if not source.exists():
        raise CheckpointError(f"{source} does not exist; pass a checkpoint.pt or an export directory")
    return _torch(source, beta, threads, data_dir, name)


def _onnx(export_dir: Path, beta: float | None, threads: int | None, device: str) -> OnnxStages:
    from bofexits.deploy.predict import open_onnx_runner

    return OnnxStages(open_onnx_runner(export_dir, beta, threads or 1, device, who="the server"))


def _torch(source: Path, beta: float | None, threads: int | None, data_dir: str | None, device: str) -> Any:
    import torch

    from bofexits.deploy.info import deploy_info
    from bofexits.devices import describe_device, resolve_device
    from bofexits.serving.torch_stages import TorchStages

    where = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    model, info = deploy_info(source, beta=beta, data_dir=data_dir)
    c, h, w = (int(d) for d in model.input_shape)
    facts = ModelFacts(
        "pytorch",
        describe_device(where),
        list(info.classes),
        (c, h, w),
        list(info.mean),
        list(info.std),
        info.color_mode,
        info.calibration.score,
        info.variant,
        (0.0, None) if info.variant == "mean" else (0.0, 1.0),
    )
    return TorchStages(model.float().to(where), info.policy, facts)
