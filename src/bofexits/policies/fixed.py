"""Fixed-exit baselines: every sample leaves at one given exit, or runs the full network.

They ignore the logits (a static truncated network and the plain backbone with its exits),
but still refuse NaN or inf logits on the batch-1 path as the runtime does on the batched one.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from bofexits.errors import ConfigError, InputError
from bofexits.policies.base import NAN_MESSAGE, ExitPolicy

__all__ = ["FullNetwork", "SingleExit"]


class SingleExit(ExitPolicy):
    """Everything leaves at exit `exit` (0-based); `exit >= S-1` runs the full network.

    Args:
        exit: the exit every sample takes, an int >= 0.

    >>> SingleExit(1).stop(1, torch.zeros(3, 2), None)[0].tolist()
    [True, True, True]
    """

    name = "single-exit"

    def __init__(self, exit: int) -> None:
        if isinstance(exit, bool) or not isinstance(exit, int) or exit < 0:
            raise ConfigError(f"exit must be an integer >= 0 (0 = first exit), got {exit!r}")
        self.exit = exit

    def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """(B,) mask, all True from exit `exit` on, for `logits` (B, classes)."""
        stop = torch.full((logits.shape[0],), index >= self.exit, dtype=torch.bool, device=logits.device)
        return stop, state

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        if not math.isfinite(logits.sum().item()):  # one reduction: NaN or inf if any logit is
            raise InputError(NAN_MESSAGE)
        return index >= self.exit, state

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "exit": self.exit}


class FullNetwork(SingleExit):
    """Never stops early: every sample runs every stage and leaves at the final exit.

    >>> FullNetwork().stop(0, torch.zeros(2, 3), None)[0].tolist()
    [False, False]
    """

    name = "full"

    def __init__(self) -> None:
        super().__init__(sys.maxsize)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
