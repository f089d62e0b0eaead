"""Confidence scores read from an exit's logits (docs/method.md §5); larger means more confident."""

from __future__ import annotations

import math

import torch

from bofexits.errors import ConfigError, InputError
from bofexits.options import DEFAULT_SCORE, SCORES, Score
from bofexits.policies.base import NAN_MESSAGE

__all__ = ["DEFAULT_SCORE", "SCORES", "Score", "check_logits", "confidence", "scalar_confidence"]



def confidence(logits: torch.Tensor, score: str) -> torch.Tensor:
    """Per-sample confidence of an exit.

    Args:
        logits: (B, classes).
        score: "max_logit" (no softmax needed: the cheapest), "max_prob", "margin" (top-1
            minus top-2 probability) or "neg_entropy" (minus the softmax entropy).

    Returns:
        (B,) scores.

    >>> confidence(torch.tensor([[2.0, 0.0]]), "max_logit").tolist()
    [2.0]
    """
    check_logits(logits, min_classes=2 if score == "margin" else 1)
    if score == "max_logit":
        return logits.amax(1)
    if score == "max_prob":
        return torch.softmax(logits, 1).amax(1)
    if score == "margin":
        top2 = torch.softmax(logits, 1).topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]
    if score == "neg_entropy":
        logp = torch.log_softmax(logits, 1)
        return (logp.exp() * logp).sum(1)
    raise ConfigError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")


def check_logits(logits: object, *, min_classes: int = 1) -> None:
    """Refuse what is not a (B, classes) float tensor: a 1-D or 3-D tensor would otherwise be
    scored along the wrong axis (a 3-D one silently), an integer one fail inside softmax."""
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"exit logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[1] < min_classes:
        raise InputError(
            f"exit logits must be (B, classes) with at least {min_classes} class(es), got shape {tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise InputError(f"exit logits must be floating point, got {logits.dtype}")


def scalar_confidence(logits: torch.Tensor, score: str) -> float:
    """Batch-1 score as a Python float; raises `InputError` on NaN or inf logits.

    A softmax score alone would hide a -inf logit, so the logits' sum is read too: it is
    finite exactly when every logit is (barring float overflow of the sum, ~1e38 in float32).
    Two host reads of 0-dim tensors cost less than one more elementwise op on the CPU.
    """
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[0] != 1:
        raise InputError(f"the batch-1 decision needs (1, classes) logits, got {tuple(logits.shape)}")
    s = confidence(logits, score).item()
    if s != s or not math.isfinite(logits.sum().item()):
        raise InputError(NAN_MESSAGE)
    return s
