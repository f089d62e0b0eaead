"""Real adaptive inference: later stages of a sample that exits are never computed.

Batch 1 runs stage i, exit i, asks the policy and returns. Batches shrink: samples that
stop leave the batch and only the rest go on; outputs are written back in input order.
Both paths call the same exit `step` and policy `stop` as training and evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from bofexits.errors import ConfigError, InputError
from bofexits.models.folded import fold_batchnorm, freeze_exits
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.base import NAN_MESSAGE, ExitPolicy

__all__ = ["AdaptiveRuntime", "ExitResult", "StepOutput", "route"]


class StepOutput(NamedTuple):
    """What one step (stage i and its exit) gives back, per sample in the step's batch.

    Attributes:
        features: (B, ...) stage i's map, the input of stage i+1; None after the final stage.
        logits: (B, classes) exit i's logits (the backbone's at the final stage).
        state: (B, ...) the exit state handed to exit i+1, or None.
    """

    features: Any
    logits: Any
    state: Any


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
        optimize: run the inference forms (`bofexits.models.folded`): BatchNorm folded into the
            convolutions and BoF constants precomputed; same results, fewer operators. Batches
            also run channels-last (NHWC) copies of the stages: oneDNN's convolutions are ~2x
            faster on them from batch 32 up, and slightly slower at batch 1, which keeps NCHW
            (docs/decisions.md). The weights are snapshotted, so build a new runtime after
            changing the model. `plain` gives the plain backbone the same treatment.
    """

    def __init__(
        self, model: MultiExitNetwork, policy: ExitPolicy, *, check_inputs: bool = True, optimize: bool = True
    ) -> None:
        _check_policy(policy)
        policy.check_exits(model.num_exits)
        self.model = model.eval()
        self.policy = policy
        self.check_inputs = check_inputs
        self.memory_format = torch.channels_last if optimize else torch.contiguous_format
        if optimize:
            self.stages = [fold_batchnorm(s) for s in model.stages]
            self.batch_stages = [_channels_last(s) for s in self.stages]
            self.exits = freeze_exits(model.exits, list(model.feature_shapes))
        else:
            self.stages, self.exits = list(model.stages), model.exits
            self.batch_stages = self.stages
        self._last = len(self.stages) - 1
        self._plain_batched = nn.Sequential(*self.batch_stages).eval()

    def with_policy(self, policy: ExitPolicy) -> AdaptiveRuntime:
        """A runtime sharing these prepared stages and exits under another policy."""
        _check_policy(policy)
        policy.check_exits(self.model.num_exits)
        other = copy.copy(self)
        other.policy = policy
        return other

    def plain_backbone(self) -> nn.Module:
        """The backbone alone in the same form as the runtime's batch-1 stages (NCHW), for export."""
        return nn.Sequential(*self.stages).eval()

    @torch.inference_mode()
    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The plain backbone with every optimisation this runtime gets: the fair speed baseline.

        Batch 1 runs the NCHW stages, batches the channels-last ones, as `run_single` and
        `run_batched` do. No input checks.
        """
        if x.shape[0] == 1:
            return _run_stages(self.stages, x)
        return self._plain_batched(x.contiguous(memory_format=self.memory_format))

    def __call__(self, x: torch.Tensor) -> ExitResult:
        """Adaptive inference on a (B, C, H, W) batch; B == 1 takes the scalar fast path."""
        if self.check_inputs:
            self.model.validate_input(x)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            return ExitResult(logits, torch.tensor([index], device=logits.device))
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
    def step(self, i: int, x: torch.Tensor, state: torch.Tensor | None) -> StepOutput:
        """Run stage i and its exit on these samples: the step every routing loop is made of.

        Stage i maps `x` (the input for i = 0, else stage i-1's features), exit i turns the
        map and the exit state into logits and the next state. The final stage (i = S-1) has
        no exit head: its logits are the backbone's. A batch of one runs the NCHW stages
        (`run_single`'s), larger batches the channels-last copies (`run_batched`'s); the
        samples may come from different requests (the server re-batches survivors), so each
        row depends on its own inputs alone. No input checks, no policy.

        Args:
            i: 0-based stage, 0..S-1.
            x: (B, ...) input of stage i.
            state: (B, ...) exit state from exit i-1, None at i = 0 (and for stateless exits).

        Returns:
            `StepOutput` (features (B, ...) or None at the final stage, logits (B, classes),
            state (B, ...) or None).
        """
        if x.shape[0] == 1:
            stage = self.stages[i]
            x = x.contiguous()
        else:
            stage = self.batch_stages[i]
            x = x.contiguous(memory_format=self.memory_format)
        if i == self._last:
            return StepOutput(None, stage(x), None)
        x = stage(x)
        logits, state = self.exits.step(i, x, state)
        return StepOutput(x, logits, state)

    @torch.inference_mode()
    def run_batched(self, x: torch.Tensor) -> ExitResult:
        """A batch where stopped samples leave and the rest go on: `route` over `step`. No input checks."""
        state: torch.Tensor | None = None
        x = x.contiguous(memory_format=self.memory_format)

        def logits_at(i: int, alive: torch.Tensor, go_on: torch.Tensor | None) -> torch.Tensor:
            nonlocal x, state
            if go_on is not None:  # drop the samples that just left
                x = _take(x, go_on)
                state = state[go_on] if state is not None else None
            out = self.step(i, x, state)
            if out.features is not None:
                x, state = out.features, out.state
            return out.logits

        return route(self.policy, self._last + 1, x.shape[0], logits_at, x.device)


def route(
    policy: ExitPolicy,
    num_exits: int,
    n: int,
    logits_at: Callable[[int, torch.Tensor, torch.Tensor | None], torch.Tensor],
    device: torch.device,
) -> ExitResult:
    """The shrinking-batch loop shared by the runtime and the offline simulation.

    Args:
        policy: decides at exits 0..S-2; the final exit takes everyone left.
        num_exits: S.
        n: batch size.
        logits_at: ``logits_at(i, alive, go_on)`` returns exit i's logits for the samples
            still in the batch; `alive` holds their positions in the input, `go_on` is the
            mask over the previous exit's batch of those that went on (None: all of them).
        device: where the index tensors live.

    Returns:
        Logits of the exit each sample took and its 0-based index, in input order.
    """
    last = num_exits - 1
    out: torch.Tensor | None = None
    exit_index = torch.full((n,), last, dtype=torch.long, device=device)
    alive = torch.arange(n, device=device)
    go_on: torch.Tensor | None = None
    pstate = policy.begin(n)
    for i in range(last):
        logits = _finite(logits_at(i, alive, go_on))  # checked before the policy sees the scores
        go_on = None
        if out is None:
            out = logits.new_empty(n, logits.shape[1])
        stop, pstate = policy.stop(i, logits, pstate)
        n_stop = int(stop.sum())
        if n_stop == 0:
            continue
        out[alive[stop]] = logits[stop]
        exit_index[alive[stop]] = i
        if n_stop == alive.shape[0]:
            return ExitResult(out, exit_index)
        go_on = ~stop
        alive = alive[go_on]
        pstate = policy.keep(pstate, go_on)
    final = _finite(logits_at(last, alive, go_on))
    if out is None:
        out = final.new_empty(n, final.shape[1])
    out[alive] = final
    return ExitResult(out, exit_index)


def _channels_last(stage: nn.Module) -> nn.Module:
    """A copy of `stage` whose 4-D weights are channels-last (NHWC), so oneDNN keeps NHWC throughout."""
    stage = copy.deepcopy(stage).eval()
    stage.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    return stage


def _run_stages(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def _take(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The samples of `x` where `keep` is True, in one copy that keeps x's memory format.

    Boolean indexing returns NCHW; a channels-last map indexed through its NHWC view stays
    channels-last, so the next stage's convolution does not convert it back.
    """
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)[keep].permute(0, 3, 1, 2)
    return x[keep]


def _finite(logits: torch.Tensor) -> torch.Tensor:
    # A NaN score compares False and would be silently routed onwards; refuse it instead.
    if not bool(torch.isfinite(logits).all()):
        raise InputError(NAN_MESSAGE)
    return logits


def _check_policy(policy: object) -> None:
    if not isinstance(policy, ExitPolicy):
        raise ConfigError(
            f"policy must be an ExitPolicy (e.g. bofexits.create_policy(...)), got {type(policy).__name__}"
        )
