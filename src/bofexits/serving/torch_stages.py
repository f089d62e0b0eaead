"""PyTorch stages from a checkpoint (or a model in memory) as a `StageBackend`.

The step is `AdaptiveRuntime.step` (its prepared inference forms: BatchNorm folded, BoF
constants precomputed, channels-last copies for batches), the decision the policy's own
`stop`, so the engine's answers are `AdaptiveRuntime`'s. Any `ExitPolicy` whose per-sample
states can be joined (`bofexits.policies.base.joinable`) is served; others are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bofexits.errors import ConfigError
from bofexits.inference.runtime import AdaptiveRuntime
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.base import ExitPolicy, joinable
from bofexits.policies.calibrated import CalibratedThreshold
from bofexits.serving.stages import ModelFacts

__all__ = ["PlainStages", "TorchStages"]


class TorchStages:
    """`AdaptiveRuntime.step` and a policy's `stop`, for the engine.

    Args:
        model: the multi-exit network, on its device.
        policy: any joinable `ExitPolicy`; a `CalibratedThreshold` also gets `set_beta`.
        facts: what the server says about the model (classes, normalisation, rule).
        optimize: `AdaptiveRuntime`'s inference forms.

    Raises:
        ConfigError: a policy whose per-sample states cannot be joined across requests.
    """

    def __init__(
        self, model: MultiExitNetwork, policy: ExitPolicy, facts: ModelFacts, *, optimize: bool = True
    ) -> None:
        if not joinable(policy):
            raise ConfigError(
                f"{type(policy).__name__} carries per-sample state that cannot be joined across requests "
                "(ExitPolicy.join); the server re-batches survivors of different requests, so serve a "
                "threshold rule (the calibrated one) or implement join"
            )
        self.runtime = AdaptiveRuntime(model, policy, check_inputs=False, optimize=optimize)
        self.policy = policy
        self.facts = facts
        self.num_exits = model.num_exits
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = param.dtype if param is not None else torch.float32
        self.beta = float(getattr(policy, "beta", float("nan")))

    def step(self, i: int, x: torch.Tensor, state: Any) -> tuple[Any, Any, Any]:
        return self.runtime.step(i, x, state)

    @torch.inference_mode()
    def decide(self, i: int, logits: torch.Tensor, pstate: Any) -> tuple[np.ndarray, Any]:
        stop, pstate = self.policy.stop(i, logits, pstate)
        return stop.cpu().numpy(), pstate

    def begin(self, n: int) -> Any:
        return self.policy.begin(n)

    def keep_states(self, pstate: Any, mask: np.ndarray) -> Any:
        if pstate is None:
            return None
        return self.policy.keep(pstate, torch.from_numpy(mask).to(self.device))

    def join_states(self, pstates: Sequence[Any]) -> Any:
        return pstates[0] if len(pstates) == 1 else self.policy.join(pstates)

    def from_numpy(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device, self.dtype)

    def to_numpy(self, logits: torch.Tensor) -> np.ndarray:
        return logits.float().cpu().numpy()

    def cat(self, arrays: Sequence[Any]) -> Any:
        if arrays[0] is None:
            return None
        return arrays[0] if len(arrays) == 1 else torch.cat(list(arrays))

    def take(self, array: Any, index: np.ndarray) -> Any:
        if array is None:
            return None
        idx = torch.from_numpy(index).to(array.device)
        if (
            array.ndim == 4
            and not array.is_contiguous()
            and array.is_contiguous(memory_format=torch.channels_last)
        ):
            return array.permute(0, 2, 3, 1).index_select(0, idx).permute(0, 3, 1, 2)  # stays channels-last
        return array.index_select(0, idx)

    def set_beta(self, beta: float) -> None:
        if not isinstance(self.policy, CalibratedThreshold):
            raise ConfigError(f"{type(self.policy).__name__} has no beta to turn; serve a calibrated rule")
        self.policy = CalibratedThreshold(self.policy.calibration, beta, self.policy.variant)
        self.beta = float(beta)


class PlainStages(TorchStages):
    """The backbone alone as one stage (no exits): the baseline served through the same engine.

    Its one step is `AdaptiveRuntime.plain` (the same inference forms), so a plain server and
    an adaptive one differ only in the exits.
    """

    def __init__(self, model: MultiExitNetwork, facts: ModelFacts, *, optimize: bool = True) -> None:
        from bofexits.policies.fixed import FullNetwork

        super().__init__(model, FullNetwork(), facts, optimize=optimize)
        self.num_exits = 1

    def step(self, i: int, x: torch.Tensor, state: Any) -> tuple[Any, Any, Any]:
        return None, self.runtime.plain(x), None

    def set_beta(self, beta: float) -> None:
        raise ConfigError("the plain backbone has no beta to turn")
