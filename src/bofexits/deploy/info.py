"""What deployment needs besides the weights: the rule with its knob, class names and preprocessing.

Both exporters (`onnx`, `torchscript`) and `bofexits predict` on a checkpoint start from
`deploy_info`, so a checkpoint gives the same rule, knob and preprocessing whichever way it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bofexits.config import TrainConfig
from bofexits.errors import BofexitsError, CheckpointError, ConfigError
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.calibrated import CalibratedThreshold, ExitCalibration, calibrated_thresholds
from bofexits.training.checkpoint import load_checkpoint, load_model

__all__ = ["DEFAULT_BETA", "DeployInfo", "deploy_info"]

#: Knob used when neither the caller nor `bofexits tune` chose one: the demo's knee for the
#: quantile rule (cheapest beta within 0.5 pp of the full network, README results); "more
#: confident than this exit usually is" for the mean rule; for the conditional rule (each exit
#: passes on a share beta of what reaches it) half, not yet measured; for the accuracy rule (leave
#: once the exit is right 90 % of the time at this confidence) just above the demo's knee (0.875). Prefer
#: `bofexits tune`.
DEFAULT_BETA: dict[str, float] = {"quantile": 0.4, "mean": 1.0, "conditional": 0.5, "accuracy": 0.9}


@dataclass
class DeployInfo:
    """Everything besides the weights that deployment needs: the rule and the preprocessing.

    Attributes:
        calibration: per-exit statistics of the policy's score.
        variant: "mean", "quantile", "conditional" or "accuracy".
        beta: the knob.
        beta_source: "argument", "tuned" (stored by `bofexits tune`) or "default" (`DEFAULT_BETA`).
        classes: class names, index i names class i.
        mean, std: per-channel normalisation of ``images / 255``.
        color_mode: "L" (1 channel) or "RGB" (3), or None for other channel counts.
    """

    calibration: ExitCalibration
    variant: str
    beta: float
    beta_source: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    color_mode: str | None

    @property
    def policy(self) -> CalibratedThreshold:
        """The calibrated rule this describes."""
        return CalibratedThreshold(self.calibration, self.beta, self.variant)


def deploy_info(
    source: str | Path | MultiExitNetwork,
    *,
    calibration: ExitCalibration | None = None,
    beta: float | None = None,
    score: str | None = None,
    variant: str | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    data_dir: str | None = None,
) -> tuple[MultiExitNetwork, DeployInfo]:
    """The network and its deployment facts, from a checkpoint or from a model plus arguments.

    For a checkpoint, score and variant default to the tuned ones (`bofexits tune`), else the
    training config's; beta to the tuned one when it was tuned for that score and variant, else
    `DEFAULT_BETA`. Class names and normalisation come from the checkpoint (training records
    them), else from the training dataset's files (read from `data_dir` or the config's). For a model, pass
    `calibration`; the variant defaults to the training default, normalisation to none (mean 0,
    std 1), class names to "0".."C-1". `classes`, `mean` and `std` override either.

    Raises:
        ConfigError: a missing calibration, a score other than the calibration's, class names or
            normalisation that do not fit the network, or a beta outside the variant's range.
        CheckpointError: the checkpoint has no calibration for the score.
    """
    if isinstance(source, MultiExitNetwork):
        model, info = source, _model_info(source, calibration, beta, score, variant)
    else:
        model, info = _checkpoint_info(source, beta, score, variant, data_dir)
    info = replace(
        info,
        classes=list(classes) if classes is not None else info.classes,
        mean=[float(v) for v in (mean if mean is not None else info.mean)],
        std=[float(v) for v in (std if std is not None else info.std)],
    )
    _check(model, info)
    return model, info


def _choose_beta(
    beta: float | None, variant: str, score: str, tuned: dict[str, Any] | None = None
) -> tuple[float, str]:
    """The knob and where it came from: the argument, else the tuned one for this rule, else the default."""
    if beta is not None:
        return float(beta), "argument"
    if tuned and tuned.get("score") == score and tuned.get("variant") == variant:
        return float(tuned["beta"]), "tuned"
    return DEFAULT_BETA.get(variant, 1.0), "default"


def _color_mode(channels: int) -> str | None:
    return {1: "L", 3: "RGB"}.get(channels)


def _model_info(
    model: MultiExitNetwork,
    calibration: ExitCalibration | None,
    beta: float | None,
    score: str | None,
    variant: str | None,
) -> DeployInfo:
    if calibration is None:
        raise ConfigError("exporting a model needs its calibration (ExitCalibration.fit on training logits)")
    if score is not None and score != calibration.score:
        raise ConfigError(f"the calibration is for score {calibration.score!r}, not {score!r}")
    variant = variant or TrainConfig().variant
    channels = model.input_shape[0]
    value, why = _choose_beta(beta, variant, calibration.score)
    names = [str(i) for i in range(model.num_classes)]
    return DeployInfo(
        calibration, variant, value, why, names, [0.0] * channels, [1.0] * channels, _color_mode(channels)
    )


def _checkpoint_info(
    path: str | Path, beta: float | None, score: str | None, variant: str | None, data_dir: str | None
) -> tuple[MultiExitNetwork, DeployInfo]:
    model, calibrations, cfg = load_model(path)
    raw = load_checkpoint(path)
    tuned = raw.get("tuned") or {}
    score = score or tuned.get("score") or cfg.score
    variant = variant or tuned.get("variant") or cfg.variant
    if score not in calibrations:
        raise CheckpointError(
            f"{path} has no calibration for score {score!r} (training did not finish); resume training first"
        )
    value, why = _choose_beta(beta, variant, score, tuned)
    stored = raw.get("data")
    if stored and data_dir is None:  # recorded by training since this version
        names, m, s = list(stored["classes"]), list(stored["mean"]), list(stored["std"])
    else:
        names, m, s = _dataset_facts(cfg.dataset, data_dir or cfg.data_dir)
    info = DeployInfo(
        calibrations[score], variant, value, why, names, m, s, _color_mode(model.input_shape[0])
    )
    return model, info


def _dataset_facts(name: str, data_dir: str | None) -> tuple[list[str], list[float], list[float]]:
    from bofexits.data.registry import load_dataset

    try:
        train, _ = load_dataset(name, data_dir, download=False)
    except BofexitsError as exc:
        raise ConfigError(
            f"the class names and normalisation of dataset {name!r} are read from its files, which are not "
            f"available ({exc}); pass --data-dir with the training data"
        ) from exc
    return list(train.classes), list(train.mean), list(train.std)


def _check(model: MultiExitNetwork, info: DeployInfo) -> None:
    """Class names and normalisation fit the network, and beta is in the variant's range."""
    channels = model.input_shape[0]
    if len(info.classes) != model.num_classes:
        raise ConfigError(f"{len(info.classes)} class names for a network with {model.num_classes} classes")
    if len(info.mean) != channels or len(info.std) != channels or any(v <= 0 for v in info.std):
        raise ConfigError(
            f"normalisation needs one mean and one positive std per input channel ({channels}), "
            f"got mean {info.mean} and std {info.std}"
        )
    calibrated_thresholds(info.calibration, info.beta, info.variant)  # refuses a beta outside the range
