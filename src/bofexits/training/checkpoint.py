"""Checkpoints: model, optimiser, calibration and resolved config in one atomically written file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bofexits._checks import state_mismatch, unsafe_load_reason
from bofexits._io import atomic_path
from bofexits.config import TrainConfig, from_dict, stored_config
from bofexits.errors import CheckpointError, ConfigError
from bofexits.models.build import build_model
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import ExitCalibration

__all__ = [
    "check_finite",
    "check_training_state",
    "load_checkpoint",
    "load_model",
    "load_state_into",
    "save_checkpoint",
    "update_checkpoint",
]

FORMAT = "bofexits-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` (plus format tag) atomically: an interrupted save leaves the old file intact.

    A symlink is written through (`atomic_path`); a full disk raises `DiskFullError` naming it
    (torch.save reports one as "unexpected pos"), with the old file intact.
    """
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
            f"{path} is not a safe bofexits checkpoint: it is corrupt or truncated, or holds objects that "
            f"would run code when loaded ({unsafe_load_reason(exc)}); delete it and retrain"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a bofexits checkpoint; pass a file written by `bofexits train`")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')}, this bofexits reads {VERSION}"
        )
    return data


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN or inf in any weight or buffer, naming the tensors.

    A single inf in a BatchNorm `running_var` makes every prediction the same class with
    confidence 1.0: evaluation, tuning and export would all "succeed" on a broken network.
    """
    bad = [
        f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)"
        for name, t in state.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    negative = [
        name
        for name, t in state.items()
        if name.endswith("running_var") and isinstance(t, torch.Tensor) and bool((t < 0).any())
    ]
    if negative:  # a variance below zero: BatchNorm would take the root of a negative number
        raise CheckpointError(
            f"{source} holds negative BatchNorm variances in {', '.join(negative[:4])}; the network is broken: "
            "retrain or use an earlier checkpoint"
        )
    if bad:
        raise CheckpointError(
            f"{source} holds NaN or inf weights in {', '.join(bad[:4])}"
            + (f" and {len(bad) - 4} more tensors" if len(bad) > 4 else "")
            + "; the network is broken: retrain or use an earlier checkpoint"
        )


def load_state_into(model: torch.nn.Module, state: Any, source: str) -> None:
    """Load weights, reporting missing, unexpected, mis-shaped and non-finite tensors by name."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} has no weight table; use a file written by `bofexits train`")
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"{source} was written for another architecture ({mismatch}); "
            "use the config it was trained with or retrain"
        )
    check_finite(state, source)
    model.load_state_dict(state)


def load_model(path: str | Path) -> tuple[MultiExitNetwork, dict[str, ExitCalibration], TrainConfig]:
    """Rebuild the network from a checkpoint's config and weights (eval mode), with its calibrations.

    The calibrations (one per confidence score) are empty when training did not finish.
    """
    data = load_checkpoint(path)
    try:
        cfg = from_dict(stored_config(data["config"]))
        model = build_model(cfg.model, load_weights=False)  # the checkpoint holds every weight
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unusable config ({exc}); retrain") from exc
    load_state_into(model, data.get("model"), f"checkpoint {path}")
    try:
        calibrations = {k: ExitCalibration.from_dict(v) for k, v in (data.get("calibration") or {}).items()}
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(
            f"checkpoint {path} has corrupt calibration statistics ({exc}); retrain"
        ) from exc
    return model.eval(), calibrations, cfg


def check_training_state(state: dict[str, Any], path: str | Path, num_epochs: int) -> None:
    """Refuse a checkpoint whose training state `train --resume` cannot continue from, naming the field.

    The weights are checked by `load_state_into`; this checks the rest the way they are: the
    epoch (an int between 0 and the run's `num_epochs`), the history (one dict per epoch done),
    the RNG state (the uint8 vector `torch.get_rng_state` returns, contiguous and of its size),
    the phase, the optimiser and schedule states, and the codebook flag. Each would otherwise
    fail deep in torch with a traceback, or resume from a state that never existed.
    """

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {path} has a corrupt training state: {field!r} {problem}; resume from an intact "
            "checkpoint, or start a new run in another --out"
        )

    if not isinstance(state.get("config"), dict):
        raise bad("config", f"must be the run's config (a dict), got {type(state.get('config')).__name__}")
    epoch = state.get("epoch")
    if type(epoch) is not int or not 0 <= epoch <= num_epochs:
        raise bad("epoch", f"must be an integer from 0 to {num_epochs}, got {epoch!r}"[:200])
    history = state.get("history")
    if (
        not isinstance(history, list)
        or len(history) != epoch
        or not all(isinstance(h, dict) and isinstance(h.get("val_acc"), list) for h in history)
    ):
        shown = type(history).__name__ if not isinstance(history, list) else f"a list of {len(history)}"
        raise bad("history", f"must be a list of one record per epoch done ({epoch}), got {shown}")
    rng, want = state.get("rng"), torch.get_rng_state()
    if not isinstance(rng, torch.Tensor):
        raise bad("rng", f"must be a tensor, got {type(rng).__name__}")
    if (
        rng.dtype != want.dtype
        or rng.shape != want.shape
        or not rng.is_contiguous()
        or rng.device.type != "cpu"
    ):
        raise bad(
            "rng",
            f"must be a contiguous {want.dtype} CPU vector of {want.numel()} values (torch.get_rng_state), "
            f"got {rng.dtype} of shape {tuple(rng.shape)}{'' if rng.is_contiguous() else ', not contiguous'}",
        )
    if not isinstance(state.get("codebooks_ready", False), bool):
        raise bad("codebooks_ready", f"must be true or false, got {state.get('codebooks_ready')!r}"[:200])
    if epoch and not isinstance(state.get("phase"), str):
        raise bad("phase", f"must be a phase name, got {state.get('phase')!r}"[:200])
    opt, sched = state.get("optimizer"), state.get("scheduler")
    if epoch and (
        not isinstance(opt, dict)
        or not isinstance(opt.get("state"), dict)
        or not isinstance(opt.get("param_groups"), list)
        or not all(isinstance(g, dict) for g in opt["param_groups"])
    ):
        raise bad("optimizer", "must be an optimiser state (a dict with 'state' and 'param_groups')")
    if epoch and not isinstance(sched, dict):
        raise bad("scheduler", f"must be a schedule state (a dict), got {type(sched).__name__}")
