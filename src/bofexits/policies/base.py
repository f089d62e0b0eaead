"""The interface every exit policy implements, used alike by the runtime and the evaluator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bofexits.errors import ConfigError, InputError

__all__ = ["NAN_MESSAGE", "ExitPolicy", "joinable"]

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

    def early_exits(self) -> int | None:
        """How many early exits the policy was fitted for (per-exit thresholds); None if any."""
        return None

    def check_exits(self, num_exits: int) -> None:
        """Refuse a network whose exit count differs from the one the policy was fitted for.

        A calibration from another network would otherwise be indexed out of range mid-batch,
        or, worse, apply exit 2's threshold at exit 3 without a word.
        """
        fitted = self.early_exits()
        if fitted is not None and fitted != num_exits - 1:
            raise ConfigError(
                f"{type(self).__name__} holds {fitted} thresholds (one per early exit), but the network has "
                f"{num_exits - 1} early exits ({num_exits} in all); calibrate or fit the policy on this network"
            )

    def keep(self, state: Any, remaining: torch.Tensor) -> Any:
        """Shrink the state to the samples that go on (`remaining`: (B,) bool)."""
        if isinstance(state, torch.Tensor):
            return state[remaining]
        return state

    def join(self, states: Sequence[Any]) -> Any:
        """One state for the samples of several batches placed one after another: the opposite of `keep`.

        A server re-batches the survivors of different requests at each exit, so their carried
        states must meet in one batch. None (stateless) and tensor states join here; a policy
        with another kind of per-sample state overrides this (`Patience` does), and one that
        does not is refused by the server (`joinable`).

        Args:
            states: the states of the batches, in the order their samples are concatenated.

        Raises:
            NotImplementedError: a state this method cannot concatenate.

        >>> ExitPolicy().join([None, None]) is None
        True
        """
        if all(s is None for s in states):
            return None
        if states and all(isinstance(s, torch.Tensor) for s in states):
            return torch.cat(list(states))
        raise NotImplementedError(
            f"{type(self).__name__} cannot join its per-sample states; override ExitPolicy.join"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: name and knob values."""
        return {"name": self.name}


def joinable(policy: ExitPolicy) -> bool:
    """Whether `policy`'s per-sample states can be joined across batches (`ExitPolicy.join`).

    >>> joinable(ExitPolicy())
    True
    """
    try:
        policy.join([policy.begin(1), policy.begin(1)])
    except NotImplementedError:
        return False
    return True
