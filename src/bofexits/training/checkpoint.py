"""Checkpoints: model, optimiser, calibration and resolved config in one atomically written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bofexits._io import atomic_path
from bofexits.config import TrainConfig, from_dict
from bofexits.errors import CheckpointError, ConfigError
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import ExitCalibration

__all__ = ["load_checkpoint", "load_model", "load_state_into", "save_checkpoint", "update_checkpoint"]

FORMAT = "bofexits-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` (plus format tag) atomically: an interrupted save leaves the old file intact."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def update_checkpoint(path: str | Path, **fields: Any) -> None:
    """Set `fields` in the checkpoint at `path` (created if absent), keeping everything else."""
    data = load_checkpoint(path) if Path(path).exists() else {}
    save_checkpoint(path, {**data, **fields})  # the loaded format tag equals the one written


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint, turning every way it can be broken into a `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first with `bofexits train`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises almost any type on garbage (Overflow, Import...)
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({exc}); delete it and retrain"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bofexits checkpoint; pass a file written by `bofexits train`")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')}, this bofexits reads {VERSION}"
        )
    return data


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, reporting missing, unexpected and mis-shaped tensors by name."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}")
        if shapes:
            parts.append(
                "shape mismatch "
                + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:4])
            )
        raise CheckpointError(
            f"{source} was written for another architecture ({'; '.join(parts)}); "
            "use the config it was trained with or retrain"
        )
    model.load_state_dict(state)


def load_model(path: str | Path) -> tuple[MultiExitNetwork, dict[str, ExitCalibration], TrainConfig]:
    """Rebuild the network from a checkpoint's config and weights (eval mode), with its calibrations.

    The calibrations (one per confidence score) are empty when training did not finish.
    """
    data = load_checkpoint(path)
    try:
        cfg = from_dict(data["config"])
        model = build_model(cfg.model)
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unusable config ({exc}); retrain") from exc
    load_state_into(model, data["model"], f"checkpoint {path}")
    try:
        calibrations = {k: ExitCalibration.from_dict(v) for k, v in (data.get("calibration") or {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} has corrupt calibration statistics ({exc}); retrain"
        ) from exc
    return model.eval(), calibrations, cfg
