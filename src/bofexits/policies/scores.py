"""Confidence scores read from an exit's logits (docs/method.md §5); larger means more confident."""

from __future__ import annotations

import math
from typing import Literal

import torch

from bofexits.errors import ConfigError, InputError
from bofexits.policies.base import NAN_MESSAGE

__all__ = ["SCORES", "Score", "confidence", "scalar_confidence"]

Score = Literal["max_logit", "max_prob", "margin", "neg_entropy"]
SCORES: tuple[str, ...] = ("max_logit", "max_prob", "margin", "neg_entropy")


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


def scalar_confidence(logits: torch.Tensor, score: str) -> float:
    """Batch-1 score as a Python float; raises `InputError` on NaN or inf logits.

    A softmax score alone would hide a -inf logit, so the logits' sum is read too: it is
    finite exactly when every logit is (barring float overflow of the sum, ~1e38 in float32).
    Two host reads of 0-dim tensors cost less than one more elementwise op on the CPU.
    """
    s = confidence(logits, score).item()
    if s != s or not math.isfinite(logits.sum().item()):
        raise InputError(NAN_MESSAGE)
    return s
