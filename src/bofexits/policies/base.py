"""The interface every exit policy implements, used alike by the runtime and the evaluator."""

from __future__ import annotations

from typing import Any

import torch

from bofexits.errors import InputError

__all__ = ["NAN_MESSAGE", "ExitPolicy"]

NAN_MESSAGE = "an exit produced NaN or inf logits; the weights are broken (retrain or reload the checkpoint)"


class ExitPolicy:
    """Decides, exit by exit, which samples stop.

    `stop` sees only what the runtime has at exit `index`: that exit's logits and the
    policy's own carried state. The final exit always stops, so policies are asked only at
    the early exits 0..S-2.
    """

    name: str = "policy"

    def begin(self, batch_size: int) -> Any:
        """State carried across exits for a new batch (None for stateless policies)."""
        return None

    def stop(self, index: int, logits: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """(B,) bool mask of samples that stop at exit `index`, and the updated state."""
        raise NotImplementedError

    def stop_one(self, index: int, logits: torch.Tensor, state: Any) -> tuple[bool, Any]:
        """Batch-1 fast path: the same decision as `stop`, as a Python bool.

        Raises `InputError` on a NaN decision input, which would otherwise route silently.
        """
        if not bool(torch.isfinite(logits).all()):
            raise InputError(NAN_MESSAGE)
        mask, state = self.stop(index, logits, state)
        return bool(mask.item()), state

    def keep(self, state: Any, remaining: torch.Tensor) -> Any:
        """Shrink the state to the samples that go on (`remaining`: (B,) bool)."""
        if isinstance(state, torch.Tensor):
            return state[remaining]
        return state

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name and knob values."""
        return {"name": self.name}
