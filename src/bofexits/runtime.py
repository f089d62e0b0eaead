"""Real adaptive inference: later stages of a sample that exits are never computed.

Batch 1 runs stage i, exit i, asks the policy and returns. Batches shrink: samples that
stop leave the batch and only the rest go on; outputs are written back in input order.
Both paths call the same exit `step` and policy `stop` as training and evaluation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError
from .inference import fold_batchnorm, freeze_exits
from .multiexit import MultiExitNetwork, check_input
from .policies.base import NAN_MESSAGE, ExitPolicy

__all__ = ["AdaptiveRuntime", "ExitResult"]


@dataclass
class ExitResult:
    """Outputs of adaptive inference.

    Attributes:
        logits: (B, classes) logits of the exit each sample took.
        exit_index: (B,) int64, 0-based exit taken (S-1 = the final classifier).
    """

    logits: torch.Tensor
    exit_index: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        """(B,) predicted classes."""
        return self.logits.argmax(1)


class AdaptiveRuntime:
    """Runs a `MultiExitNetwork` with real early exit under an `ExitPolicy`.

    Args:
        model: the multi-exit network (put in eval mode here).
        policy: decides at each early exit which samples stop.
        check_inputs: validate shape, dtype and finiteness of every input batch.
        optimize: run the inference forms (`bofexits.inference`): BatchNorm folded into the
            convolutions and BoF constants precomputed; same results, fewer operators. The
            weights are snapshotted, so build a new runtime after changing the model.
    """

    def __init__(
        self, model: MultiExitNetwork, policy: ExitPolicy, *, check_inputs: bool = True, optimize: bool = True
    ) -> None:
        self.model = model.eval()
        self.policy = policy
        self.check_inputs = check_inputs
        if optimize:
            self.stages = [fold_batchnorm(s) for s in model.stages]
            self.exits = freeze_exits(model.exits, list(model.feature_shapes))
        else:
            self.stages, self.exits = list(model.stages), model.exits
        self._last = len(self.stages) - 1

    def with_policy(self, policy: ExitPolicy) -> AdaptiveRuntime:
        """A runtime sharing these prepared stages and exits under another policy."""
        other = copy.copy(self)
        other.policy = policy
        return other

    def plain_backbone(self) -> nn.Module:
        """The backbone alone in the same form as the runtime's stages: the fair speed baseline."""
        return nn.Sequential(*self.stages).eval()

    def __call__(self, x: torch.Tensor) -> ExitResult:
        """Adaptive inference on a (B, C, H, W) batch; B == 1 takes the scalar fast path."""
        if self.check_inputs:
            check_input(x, self.model.input_shape)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            return ExitResult(logits, torch.tensor([index]))
        return self.run_batched(x)

    @torch.inference_mode()
    def run_single(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One sample: (1, classes) logits and the 0-based exit it took. No input checks."""
        exits, policy = self.exits, self.policy
        state: torch.Tensor | None = None
        pstate = policy.begin(1)
        for i in range(self._last):
            x = self.stages[i](x)
            logits, state = exits.step(i, x, state)
            stop, pstate = policy.stop_one(i, logits, pstate)  # raises on NaN scores
            if stop:
                return logits, i
        return _finite(self.stages[self._last](x)), self._last

    @torch.inference_mode()
    def run_batched(self, x: torch.Tensor) -> ExitResult:
        """A batch where stopped samples leave and the rest go on. No input checks."""
        exits, policy = self.exits, self.policy
        n = x.shape[0]
        out: torch.Tensor | None = None
        exit_index = torch.full((n,), self._last, dtype=torch.long, device=x.device)
        alive = torch.arange(n, device=x.device)
        state: torch.Tensor | None = None
        pstate = policy.begin(n)
        for i in range(self._last):
            x = self.stages[i](x)
            logits, state = exits.step(i, x, state)
            _finite(logits)  # checked before the policy: a NaN score would silently route onwards
            if out is None:
                out = logits.new_empty(n, logits.shape[1])
            stop, pstate = policy.stop(i, logits, pstate)
            n_stop = int(stop.sum())
            if n_stop == 0:
                continue
            out[alive[stop]] = logits[stop]
            exit_index[alive[stop]] = i
            if n_stop == alive.shape[0]:
                return ExitResult(_finite(out), exit_index)
            go_on = ~stop
            alive, x = alive[go_on], x[go_on]
            state = state[go_on] if state is not None else None
            pstate = policy.keep(pstate, go_on)
        final = self.stages[self._last](x)
        if out is None:
            out = final.new_empty(n, final.shape[1])
        out[alive] = final
        return ExitResult(_finite(out), exit_index)


def _finite(logits: torch.Tensor) -> torch.Tensor:
    # A NaN score compares False and would be silently routed onwards; refuse it instead.
    if not bool(torch.isfinite(logits).all()):
        raise InputError(NAN_MESSAGE)
    return logits
