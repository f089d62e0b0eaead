"""Fitting the proposed rule's per-exit statistics: means, quantiles, conditional and accuracy tables.

`ExitCalibration.fit` reads the early exits' scores on calibration samples once and stores
every table a variant of the rule needs (docs/method.md §5), on a grid of 1001 levels of the
knob; `policies.calibrated` turns a table and a beta into thresholds. The tables are checked
on construction, so a broken file is refused when it is read, not when it silently sends
every sample to the last exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bofexits.errors import ConfigError, InputError
from bofexits.options import DEFAULT_SCORE, SCORES
from bofexits.policies.scores import confidence

__all__ = [
    "GRID",
    "NEVER",
    "CalibrationError",
    "ExitCalibration",
    "accuracy_thresholds",
    "conditional_quantiles",
    "isotonic_blocks",
]

GRID = 1001  # stored quantile levels 0, 0.001, ..., 1
_GRID = GRID  # the name the deployment runner's copy is checked against
_CONDITIONAL_SAMPLES = 8192
_CONDITIONAL_LEVELS = 201

@dataclass
class ExitCalibration:
    """Per-exit statistics of a confidence score over calibration samples.

    Attributes:
        score: which confidence score the statistics describe.
        means: (S-1,) mean score at each early exit.
        quantiles: (S-1, 1001) score quantiles at levels 0, 0.001, ..., 1.
        num_samples: how many samples the statistics come from.
        conditional: (S-1, 1001) thresholds of the conditional variant at beta = 0, 0.001, ..., 1:
            row i is the beta-quantile of exit i's scores over the calibration samples that reach
            exit i under those thresholds (None in calibrations made before this variant existed).
        accuracy: (S-1, 1001) thresholds of the accuracy variant at beta = 0, 0.001, ..., 1: row
            i is the score at which exit i's isotonic accuracy, interpolated between its blocks,
            reaches beta (`accuracy_thresholds`); None when the calibration had no labels or
            predates it.
    """

    score: str
    means: torch.Tensor
    quantiles: torch.Tensor
    num_samples: int
    conditional: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_statistics(self)

    @classmethod
    def fit(
        cls,
        exit_logits: Sequence[torch.Tensor],
        score: str = DEFAULT_SCORE,
        labels: torch.Tensor | None = None,
    ) -> ExitCalibration:
        """Collect statistics from the logits of the early exits, [(N, classes)] * (S-1).

        With the samples' `labels` (N,) the accuracy variant's table is fitted too.
        """
        if score not in SCORES:
            raise ConfigError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if isinstance(exit_logits, torch.Tensor) or not isinstance(exit_logits, Sequence):
            raise InputError("calibration needs a list of (N, classes) logits, one tensor per early exit")
        if not exit_logits or not isinstance(exit_logits[0], torch.Tensor) or exit_logits[0].shape[0] == 0:
            raise InputError("calibration needs at least one sample at one early exit")
        sizes = {lg.shape[0] if isinstance(lg, torch.Tensor) and lg.ndim else -1 for lg in exit_logits}
        if len(sizes) != 1:
            raise InputError(
                f"every early exit needs the logits of the same samples, got sizes {sorted(sizes)}"
            )
        scores = torch.stack([confidence(logits.float(), score) for logits in exit_logits])  # (S-1, N)
        if not bool(torch.isfinite(scores).all()):
            raise InputError("calibration logits contain NaN or inf; the model weights are broken, retrain")
        levels = torch.linspace(0, 1, GRID, dtype=torch.float64)
        quantiles = torch.quantile(scores.double(), levels, dim=1).T.float()  # (S-1, GRID)
        # The sequential quantiles cost one pass per level: compute 201 and interpolate to the grid.
        coarse = torch.linspace(0, 1, _CONDITIONAL_LEVELS, dtype=torch.float64)
        conditional = _interpolate_levels(conditional_quantiles(scores, coarse), coarse, levels)
        accuracy = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != (scores.shape[1],):
                raise InputError(
                    f"calibration labels must be a ({scores.shape[1]},) tensor, one per sample, got "
                    f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}"
                )
            correct = torch.stack([lg.argmax(1) == labels for lg in exit_logits])  # (S-1, N)
            accuracy = accuracy_thresholds(scores, correct, levels)
        return cls(score, scores.mean(1), quantiles, int(scores.shape[1]), conditional, accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "means": self.means.tolist(),
            "quantiles": self.quantiles.tolist(),
            "num_samples": self.num_samples,
            "conditional": None if self.conditional is None else self.conditional.tolist(),
            "accuracy": None if self.accuracy is None else self.accuracy.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitCalibration:
        """Rebuild from `to_dict` output; a malformed or non-finite table is refused, naming the field."""
        if not isinstance(data, dict):
            raise CalibrationError(f"calibration must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("score", "means", "quantiles", "num_samples") if k not in data]
        if missing:
            raise CalibrationError(f"calibration lacks {', '.join(missing)}")
        cond, acc = data.get("conditional"), data.get("accuracy")
        return cls(
            data["score"],
            _table("means", data["means"]),
            _table("quantiles", data["quantiles"]),
            data["num_samples"],
            None if cond is None else _table("conditional", cond),
            None if acc is None else _table("accuracy", acc),
        )


class CalibrationError(ConfigError):
    """Calibration statistics are malformed or non-finite: recalibrate (retrain) or re-export."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; the statistics are broken: recalibrate (`bofexits tune` or retrain)")


def _table(name: str, value: Any) -> torch.Tensor:
    """A JSON list of numbers as a float32 tensor, or a `CalibrationError` naming the field."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CalibrationError(f"calibration field {name!r} is not a table of numbers ({exc})") from None


def _check_statistics(cal: ExitCalibration) -> None:
    """Shapes agree (S-1 exits, 1001 levels) and no statistic is NaN.

    A NaN threshold compares False with every score, so it would send every sample to the
    last exit without a word; +inf is legitimate only in the conditional table (no
    calibration sample reaches that exit at that beta).
    """
    if cal.score not in SCORES:
        raise CalibrationError(f"calibration score {cal.score!r} is not one of {', '.join(SCORES)}")
    if isinstance(cal.num_samples, bool) or not isinstance(cal.num_samples, int) or cal.num_samples < 1:
        raise CalibrationError(f"calibration num_samples must be a positive integer, got {cal.num_samples!r}")
    if cal.means.ndim != 1 or cal.means.numel() == 0:
        raise CalibrationError(
            f"calibration means must be a non-empty (S-1,) vector, got shape {tuple(cal.means.shape)}"
        )
    exits = cal.means.shape[0]
    tables = {"quantiles": cal.quantiles, "conditional": cal.conditional, "accuracy": cal.accuracy}
    for name, table in tables.items():
        if table is not None and tuple(table.shape) != (exits, GRID):
            raise CalibrationError(
                f"calibration {name} must have shape ({exits}, {GRID}) for {exits} early exits, "
                f"got {tuple(table.shape)}"
            )
    for name, table in {"means": cal.means, "quantiles": cal.quantiles}.items():
        bad = ~torch.isfinite(table)
        if bool(bad.any()):
            raise CalibrationError(f"calibration {name} holds {int(bad.sum())} NaN or infinite values")
    unordered = (cal.quantiles[:, 1:] < cal.quantiles[:, :-1]).any(1)
    if bool(unordered.any()):  # quantiles grow with the level; a reversed table inverts the knob
        rows = [i for i, bad in enumerate(unordered.tolist()) if bad]
        raise CalibrationError(f"calibration quantiles decrease with the level at early exits {rows}")
    for name, table in {"conditional": cal.conditional, "accuracy": cal.accuracy}.items():
        if table is not None and bool(torch.isnan(table).any()):
            raise CalibrationError(f"calibration {name} holds {int(torch.isnan(table).sum())} NaN values")
    if cal.accuracy is not None and bool((cal.accuracy[:, 1:] < cal.accuracy[:, :-1]).any()):
        raise CalibrationError("calibration accuracy thresholds decrease with beta; recalibrate")


def _interpolate_levels(values: torch.Tensor, at: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(S-1, G) values at levels `at`, linearly interpolated to `levels` (both ascending in [0, 1]).

    Infinite entries (levels at which no calibration sample reaches an exit) are left out of
    the interpolation, which would turn them into NaN, and the nearest finite value stands in.
    """
    x, xp = levels.numpy(), at.numpy()
    rows = []
    for row in values.double().numpy():
        ok = np.isfinite(row)
        rows.append(np.interp(x, xp[ok], row[ok]) if ok.any() else np.full(x.shape, np.inf))
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def conditional_quantiles(scores: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Thresholds where each exit stops the (1 - beta) most confident of the samples reaching it.

    Exit by exit, the threshold is the beta-quantile of the scores of the calibration
    samples still running; those at or above it stop. On the calibration data a fraction
    beta^i of the samples passes exit i, whatever the exits' confidence levels, so samples
    spread over the exits instead of piling up where the scores happen to be high.

    Args:
        scores: (S-1, N) scores of the early exits on the calibration samples.
        levels: (G,) beta values in [0, 1].

    Returns:
        (S-1, G) thresholds (+inf where no calibration sample reaches the exit).

    >>> conditional_quantiles(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 1.0, 2.0, 3.0, 4.0]]),
    ...                       torch.tensor([0.5])).flatten().tolist()
    [3.0, 3.0]
    """
    n_exits, n = scores.shape
    if n > _CONDITIONAL_SAMPLES:  # evenly spaced: quantile error ~1/sqrt(8192), 1000x less work
        scores = scores[:, torch.linspace(0, n - 1, _CONDITIONAL_SAMPLES).long()]
    out = torch.empty(n_exits, levels.shape[0], dtype=torch.float32)
    s64 = scores.detach().double().cpu().numpy()
    for g, beta in enumerate(levels.tolist()):
        alive = np.ones(s64.shape[1], dtype=bool)
        for i in range(n_exits):
            reach = s64[i][alive]
            t = float(np.quantile(reach, beta)) if reach.size else float("inf")
            out[i, g] = t
            alive &= s64[i] < t
    return out


NEVER = float(np.finfo(np.float32).max)
"""A threshold no score reaches, finite so that interpolating the table never makes NaN."""


def isotonic_blocks(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy as a non-decreasing function of the score (isotonic regression, pool adjacent violators).

    Returns, per pooled block of samples in score order, its mean score and its accuracy (the
    share of its samples the exit gets right), both strictly increasing: the most faithful
    monotone estimate of "how often is this exit right when it is this confident".

    >>> centres, acc = isotonic_blocks(np.array([0.2, 0.9, 0.5, 0.7]), np.array([0, 1, 1, 0]))
    >>> centres.tolist(), acc.tolist()
    ([0.2, 0.6, 0.9], [0.0, 0.5, 1.0])
    """
    order = np.argsort(scores, kind="stable")
    values: list[float] = []  # per block: accuracy, size, score sum
    sizes: list[int] = []
    sums: list[float] = []
    for v, x in zip(correct[order].astype(np.float64), scores[order].astype(np.float64), strict=True):
        values.append(v)
        sizes.append(1)
        sums.append(x)
        while len(values) > 1 and values[-2] >= values[-1]:  # pool violators (and equal neighbours)
            n = sizes[-2] + sizes[-1]
            values[-2:] = [(values[-2] * sizes[-2] + values[-1] * sizes[-1]) / n]
            sizes[-2:] = [n]
            sums[-2:] = [sums[-2] + sums[-1]]
    return np.array(sums) / np.array(sizes), np.array(values)


def accuracy_thresholds(scores: torch.Tensor, correct: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Thresholds at which each exit's calibrated accuracy reaches each level beta.

    Exit i stops a sample when its score is at least the score at which the exit's isotonic
    accuracy (`isotonic_blocks`, interpolated linearly between the blocks' mean scores) is
    beta: beta reads as "leave once this exit is right beta of the time at this confidence".
    Unlike a quantile, it sends nothing onwards from an exit that is already accurate enough,
    and everything from one that is not; the interpolation keeps the knob continuous where the
    blocks are large (an exit that is nearly always right on its training data).
    Level 0 is -inf (every sample stops at exit 1); level 1, and a level above every block's
    accuracy, is `NEVER` (no early exit). Below the first block's accuracy the threshold runs
    from the least calibration score (level 0) to that block's mean score.

    Args:
        scores: (S-1, N) early exits' scores on calibration samples.
        correct: (S-1, N) whether each exit's prediction is right.
        levels: (G,) beta values in [0, 1], ascending.

    Returns:
        (S-1, G) float32 thresholds, non-decreasing along G.

    >>> accuracy_thresholds(torch.tensor([[0.25, 0.75, 0.5, 0.625]]), torch.tensor([[0, 1, 1, 0]]),
    ...                     torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])).tolist()
    [[-inf, 0.40625, 0.5625, 0.65625, 3.4028234663852886e+38]]
    """
    rows = []
    lv = levels.double().numpy()
    for s, c in zip(scores.double().numpy(), correct.numpy(), strict=True):
        centres, acc = isotonic_blocks(s, c)
        if acc[0] > 0:  # anchor level 0 at the least score: the knob starts where everything stops
            centres, acc = np.concatenate([[s.min()], centres]), np.concatenate([[0.0], acc])
        row = np.interp(lv, acc, centres)
        row[lv > acc[-1]] = NEVER
        row[lv <= 0] = -np.inf
        row[lv >= 1] = NEVER  # the most accurate end of the knob is the full network, by definition
        rows.append(row)
    return torch.tensor(np.stack(rows), dtype=torch.float32)
