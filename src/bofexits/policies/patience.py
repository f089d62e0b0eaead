"""Patience-based early exit: PABEE, Zhou et al. 2020, "BERT Loses Patience: Fast and Robust
Inference with Early Exit" (NeurIPS).

A sample stops once its predicted class has stayed the same for `patience` consecutive
exits. Here `patience` counts the agreeing exits including the current one, so patience=1
stops everything at the first exit; the paper's patience t (t unchanged predictions after
the first) is `Patience(t + 1)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bofexits.errors import ConfigError, InputError
from bofexits.policies.base import NAN_MESSAGE, ExitPolicy

__all__ = ["Patience", "PatienceState", "update_run"]

PatienceState = tuple[torch.Tensor, torch.Tensor]
"""(previous prediction (B,) int64, -1 before the first exit; current run length (B,) int64)."""


def update_run(prev: torch.Tensor, run: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Run length after seeing `pred`: one more if it repeats `prev`, else 1. All (B,) int64.

    >>> update_run(torch.tensor([2, 2, -1]), torch.tensor([1, 3, 0]), torch.tensor([2, 0, 4])).tolist()
    [2, 1, 1]
    """
    return torch.where(pred == prev, run + 1, torch.ones_like(run))


class Patience(ExitPolicy):
    """PABEE (Zhou et al. 2020): stop when the last `patience` exits (this one included) agree.

    State: `PatienceState`, shrunk by `keep` when samples leave the batch. The batch-1 path
    (`stop_one`) carries the same two values as Python ints.

    Args:
        patience: number of consecutive agreeing exits needed, an int >= 1; larger is slower
            and more accurate, and more than S-1 never stops early.

    >>> policy = Patience(2)
    >>> state = policy.begin(2)
    >>> stop, state = policy.stop(0, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), state)
    >>> policy.stop(1, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), state)[0].tolist()
    [True, False]
    """

    name = "patience"

    def __init__(self, patience: int) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"patience must be an integer >= 1, got {patience!r}")
        self.patience = patience

    def begin(self, batch_size: int) -> PatienceState:
        return (
            torch.full((batch_size,), -1, dtype=torch.long),
            torch.zeros(batch_size, dtype=torch.long),
        )

    def stop(
        self, index: int, logits: torch.Tensor, state: PatienceState
    ) -> tuple[torch.Tensor, PatienceState]:
        """(B,) bool mask for `logits` (B, classes), and the updated state."""
        pred = logits.argmax(1)
        prev, run = state[0].to(pred.device), state[1].to(pred.device)
        run = update_run(prev, run, pred)
        return run >= self.patience, (pred, run)

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        """Batch-1 decision as a Python bool; raises on NaN or inf logits (their sum is not finite)."""
        if not math.isfinite(logits.sum().item()):
            raise InputError(NAN_MESSAGE)
        pred = int(logits.argmax().item())
        prev, run = state
        if isinstance(prev, torch.Tensor):  # the tensors from begin(1)
            prev, run = int(prev.item()), int(run.item())
        run = run + 1 if pred == prev else 1
        return run >= self.patience, (pred, run)

    def keep(self, state: PatienceState, remaining: torch.Tensor) -> PatienceState:
        """Both state tensors restricted to the samples that go on (`remaining`: (B,) bool)."""
        return state[0][remaining], state[1][remaining]

    def join(self, states: Sequence[PatienceState]) -> PatienceState:
        """The states of several batches as one, samples in order (the opposite of `keep`)."""
        return torch.cat([s[0] for s in states]), torch.cat([s[1] for s in states])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "patience": self.patience}
