"""The calibrated stopping rule in numpy: `bofexits.policies.confidence` and `calibrated_thresholds` again.

The runner (`bofexits.deploy.runner`) cannot import the policies (they need torch), so the
scores and the thresholds are written here once more, in the same float32 arithmetic;
`tests/deploy/test_runner.py` checks both against the PyTorch functions, and these names
(`SCORES`, `VARIANTS`, the 1001-level grid) against theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DeployError, RunnerInputError

__all__ = ["SCORES", "VARIANTS", "calibrated_thresholds", "confidence", "score_one", "threshold_vector"]

# The same names as bofexits.policies (scores.SCORES, calibrated.VARIANTS); a test compares them.
SCORES: tuple[str, ...] = ("max_logit", "max_prob", "margin", "neg_entropy")
VARIANTS: tuple[str, ...] = ("mean", "quantile", "conditional", "accuracy")
_GRID = 1001  # quantile levels 0, 0.001, ..., 1, as in bofexits.policies.calibrated


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def confidence(logits: np.ndarray, score: str) -> np.ndarray:
    """Per-sample confidence of an exit: `bofexits.policies.confidence` in numpy.

    Args:
        logits: (B, classes) float32.
        score: "max_logit", "max_prob", "margin" (top-1 minus top-2 probability) or
            "neg_entropy" (minus the softmax entropy).

    Returns:
        (B,) scores, larger meaning more confident.

    >>> confidence(np.array([[2.0, 0.0]], dtype=np.float32), "max_logit").tolist()
    [2.0]
    """
    if score == "max_logit":
        return logits.max(1)
    if score == "max_prob":
        return _softmax(logits).max(1)
    if score == "margin":
        top2 = np.partition(_softmax(logits), -2, axis=1)[:, -2:]  # (B, 2): second, first
        return top2[:, 1] - top2[:, 0]
    if score == "neg_entropy":
        shifted = logits - logits.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return (np.exp(logp) * logp).sum(1)
    raise DeployError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def score_one(logits: np.ndarray, score: str) -> float:
    """`confidence` of a (1, classes) row as a float, in fewer numpy calls for the common scores.

    The top softmax probability is exp(0) / sum = 1 / sum(exp(x - max)), the same float32 value.
    """
    row = logits[0]
    if score == "max_logit":
        return float(row.max())
    if score == "max_prob":
        return float(np.float32(1.0) / np.exp(row - row.max()).sum())
    return float(confidence(logits, score)[0])


def calibrated_thresholds(
    means: Sequence[float],
    quantiles: np.ndarray,
    beta: float,
    variant: str,
    conditional: np.ndarray | None = None,
    accuracy: np.ndarray | None = None,
) -> list[float]:
    """Threshold per early exit for knob `beta`: `bofexits.policies.calibrated_thresholds` in numpy.

    "mean": beta * mean_i; "quantile": the beta-quantile of exit i's calibration scores;
    "conditional": the beta-quantile over the calibration samples that reach exit i (the
    precomputed `conditional` table); "accuracy": the least score at which exit i's calibrated
    accuracy reaches beta (the precomputed `accuracy` table). The tables are interpolated linearly on
    their 1001-level grid (beta = 0: -inf, every sample stops at exit 1; beta = 1: +inf, the full
    network). Computed in float32 like the PyTorch version, so both give the same floats.

    >>> calibrated_thresholds([2.0, 4.0], np.zeros((2, 1001), np.float32), 1.5, "mean")
    [3.0, 6.0]
    """
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta != beta:
        raise DeployError(f"beta must be a number, got {beta!r}")
    if variant == "mean":
        m = np.asarray(means, dtype=np.float32)
        if beta < 0:
            raise DeployError(f"beta must be >= 0 for the mean variant, got {beta}")
        if bool((m <= 0).any()):
            raise DeployError(f"the mean variant needs positive mean scores, got {m.tolist()}")
        return [float(v) for v in np.float32(beta) * m]
    if variant not in VARIANTS:
        raise DeployError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0.0 <= beta <= 1.0:
        raise DeployError(f"beta must be in [0, 1] for the {variant} variant, got {beta}")
    table = {"quantile": quantiles, "conditional": conditional}.get(variant, accuracy)
    if table is None:
        raise DeployError(
            f"the export has no statistics for the {variant} variant; re-export with a newer bofexits"
        )
    q = np.asarray(table, dtype=np.float32)
    if beta == 0.0:
        return [float("-inf")] * q.shape[0]
    if beta == 1.0:  # the full network by definition, whatever a score rounds to
        return [float("inf")] * q.shape[0]
    pos = beta * (_GRID - 1)
    lo = int(pos)
    hi = min(lo + 1, _GRID - 1)
    frac = pos - lo
    return [float(v) for v in q[:, lo] * np.float32(1 - frac) + q[:, hi] * np.float32(frac)]


def threshold_vector(thresholds: Sequence[float] | np.ndarray, count: int) -> np.ndarray:
    """The (count,) float32 thresholds an adaptive graph is fed, checked.

    float32 as the graph compares them (`calibrated_thresholds` gives float32 values already).
    -inf (always stop, what beta = 0 gives) and +inf (never stop) are thresholds; NaN is not:
    every score compares False with it, so the staged rule would send every sample on and
    the graphs would stop every sample, each silently.

    Raises:
        RunnerInputError: not `count` numbers (one per early exit), or a NaN among them.

    >>> threshold_vector([float("-inf"), 0.5], 2).tolist()
    [-inf, 0.5]
    """
    try:
        t = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RunnerInputError(
            f"thresholds must be {count} numbers, one per early exit; got {thresholds!r}"
        ) from exc
    if t.shape != (count,):
        raise RunnerInputError(
            f"thresholds must have shape ({count},), one per early exit, got shape {t.shape}; compute them "
            "with calibrated_thresholds or set the knob with set_beta"
        )
    if bool(np.isnan(t).any()):
        raise RunnerInputError(
            f"thresholds[{int(np.flatnonzero(np.isnan(t))[0])}] is NaN, which no score passes or fails "
            "consistently; use a number (-inf: always stop there, +inf: never)"
        )
    return t.astype(np.float32)
