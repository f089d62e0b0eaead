"""Adaptive inference designed for CUDA: one host read per exit, CUDA graphs at batch 1.

`AdaptiveRuntime` was shaped by the CPU, where the host *is* the device. On a GPU every
`.item()`, `bool(tensor)`, `int(mask.sum())` and boolean-mask index waits for the device to
drain its queue, and at batch 1 every tiny kernel is one more launch. Measured on an H200
with the CPU design: batch 1 adaptive 0.604 ms against 0.428 ms for the plain backbone (a
loss), batch 256 79k images/s against 606k. `CudaAdaptiveRuntime` keeps the same maths (the
exits' `step`, the policy's `stop` and scores) and changes only how often the host waits:

* Batch 1 (`run_single`): segment i is stage i, exit i and the decision's inputs, a (2,)
  probe [score, all logits finite]. On a CUDA device each segment is captured once per input
  shape as a `torch.cuda.CUDAGraph` (static input and outputs; segment i+1 reads segment i's
  outputs in place), so an exit costs one graph launch and one 2-number read. The score is
  read and compared on the host, as `policy.stop_one` compares it: decisions equal the CPU
  runtime's bit for bit, and the graphs do not depend on beta, so `with_policy` reuses them.
  `plain` at batch 1 replays a graph of the whole backbone: graphs against graphs, or with
  ``graphs=False`` eager against eager.
* Batches (`run_batched`): per exit, the policy's `stop` mask stays on the device; every alive
  sample's logits and exit index are written to the outputs with `index_copy_` (samples that
  go on are overwritten at a later exit), and one `torch.nonzero` over [go on..., NaN flag]
  gives the survivors' indices and the finiteness verdict in the same host read (`survivors`).
  The batch is compacted with `index_select`. At most one host read per exit.

The fast batch-1 decision needs a threshold rule: `CalibratedThreshold` or a `ScoreThreshold`
(`GlobalThreshold`, `EntropyThreshold`, `BudgetedThreshold`), see `threshold_rule`. Any other
policy runs the same segments and asks its own `stop_one` (its own host reads); in batches,
its `stop` runs on the device as for every policy, but a policy state that `keep` shrinks
with a boolean mask (`Patience`) costs it one more read per exit.

GPU. The CPU runs everything here except the graph capture (graphs need ``device.type ==
"cuda"``), so tests/inference/test_gpu.py checks exits, logits and the read count on the CPU;
its tests marked ``gpu`` (graph == eager, GPU == CPU up to near-threshold flips, synchronising
calls counted by `torch.cuda.set_sync_debug_mode`) run only on a CUDA machine. One script
checks a GPU in under 4 minutes: ``python benchmarks/gpu_check.py [--out runs/gpu_check]``
prints the environment, runs those tests, times plain against adaptive (batch 1 eager and
graphed, batch 256; the demo network and an untrained torchvision ResNet-50 at 224x224) and
writes gpu_check.json and gpu_check.md; ``--dry-run`` runs its CPU parts on a tiny network.

Not done: CUDA graphs of the batched path (one per survivor-count bucket, padding to the
bucket) and ``torch.compile`` of the stages; both would cut launches further at large batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast

import torch
from torch import nn

from bofexits.errors import InputError
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.policies.base import NAN_MESSAGE, ExitPolicy
from bofexits.policies.calibrated import CalibratedThreshold
from bofexits.policies.scores import confidence
from bofexits.policies.thresholds import ScoreThreshold

__all__ = [
    "CudaAdaptiveRuntime",
    "ThresholdRule",
    "decide",
    "near_threshold",
    "runtime_for",
    "survivors",
    "threshold_rule",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_WARMUP = 2  # eager passes before a capture: cuDNN picks its algorithms, cuBLAS its workspace


@dataclass(frozen=True)
class ThresholdRule:
    """Stop at early exit i when score(logits) >= thresholds[i]: a decision from one read of the score.

    Attributes:
        score: the confidence score (`bofexits.policies.scores.SCORES`).
        thresholds: one per early exit (S-1 values).
    """

    score: str
    thresholds: tuple[float, ...]


def threshold_rule(policy: ExitPolicy, early_exits: int) -> ThresholdRule | None:
    """The policy's thresholds when its batch-1 decision is exactly ``score >= threshold_i``, else None.

    A subclass that overrides `stop_one` decides otherwise and gets None (the generic path).

    >>> from bofexits.policies import GlobalThreshold
    >>> threshold_rule(GlobalThreshold(0.7), 3)
    ThresholdRule(score='max_prob', thresholds=(0.7, 0.7, 0.7))
    """
    if isinstance(policy, CalibratedThreshold) and type(policy).stop_one is CalibratedThreshold.stop_one:
        return ThresholdRule(policy.score, tuple(policy.thresholds))
    if isinstance(policy, ScoreThreshold) and type(policy).stop_one is ScoreThreshold.stop_one:
        return ThresholdRule(policy.score, tuple(policy.threshold_at(i) for i in range(early_exits)))
    return None


def decide(probe: Sequence[float], threshold: float) -> bool:
    """Batch-1 decision from a read probe [score, all logits finite]; raises `InputError` on NaN/inf.

    The comparison is Python's, in double precision, as `policy.stop_one` makes it.

    >>> decide([0.8, 1.0], 0.7), decide([0.6, 1.0], 0.7)
    (True, False)
    """
    score, finite = probe
    if not finite or score != score:
        raise InputError(NAN_MESSAGE)
    return score >= threshold


def survivors(stop: torch.Tensor, logits: torch.Tensor) -> torch.Tensor | None:
    """Positions of the samples that go on, from one host read; raises `InputError` on NaN/inf logits.

    One `torch.nonzero` over [~stop | bad, bad], bad = "some logit is not finite": when bad,
    every entry is set and the count is B + 1, which no finite batch gives, so the count alone
    tells the two apart and the indices need no second read.

    Args:
        stop: (B,) bool, the samples that stop here.
        logits: (B, classes) of this exit.

    Returns:
        (M,) int64 positions of those that go on, or None when all B go on (nothing to compact).

    >>> survivors(torch.tensor([True, False, True]), torch.zeros(3, 2)).tolist()
    [1]
    """
    bad = ~torch.isfinite(logits).all()  # () bool, stays on the device
    flags = torch.cat([~stop | bad, bad.view(1)])
    kept = _nonzero(flags)  # the one host read
    if kept.shape[0] > stop.shape[0]:
        raise InputError(NAN_MESSAGE)
    return None if kept.shape[0] == stop.shape[0] else kept


def near_threshold(
    exit_logits: Sequence[torch.Tensor], rule: ThresholdRule, exit_index: torch.Tensor, tol: float = 1e-4
) -> torch.Tensor:
    """(B,) bool: samples whose route hangs on rounding, a score within `tol` of its exit's threshold.

    Only the exits a sample reached count (up to the one it took). Two devices (or TF32
    against float32) may route such a sample differently; any other difference is a bug.

    Args:
        exit_logits: every exit's logits, [(B, classes)] * S (the final one is ignored).
        rule: the thresholds.
        exit_index: (B,) exit each sample took on the reference device.
        tol: how close counts as near, relative to max(1, |threshold|).
    """
    near = torch.zeros(exit_index.shape[0], dtype=torch.bool)
    for i, threshold in enumerate(rule.thresholds):
        score = confidence(exit_logits[i].double().cpu(), rule.score)
        gap = (score - threshold).abs() <= tol * max(1.0, abs(threshold))
        near |= gap & (exit_index.cpu() >= i)
    return near


@dataclass
class _Graphs:
    """One input shape's captured batch-1 chain; replays overwrite `outputs` in place."""

    input: torch.Tensor
    graphs: list[torch.cuda.CUDAGraph] = field(default_factory=list)
    outputs: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)


class CudaAdaptiveRuntime(AdaptiveRuntime):
    """`AdaptiveRuntime` with at most one host read per exit, and CUDA graphs at batch 1 on a GPU.

    Same interface and results (`__call__`, `run_single`, `run_batched`, `plain`,
    `with_policy`, `ExitResult`); the module docstring gives the design. It runs on any device
    and is tested on the CPU, but it is built for a GPU: on a CPU a host read costs nothing and
    `AdaptiveRuntime`, whose CPU paths are unchanged, remains the runtime to use.

    Args:
        model: the multi-exit network, already on its device.
        policy: the exit policy (fast batch-1 path for threshold rules, `threshold_rule`).
        check_inputs: validate every input batch (one more host read: its finiteness).
        optimize: the inference forms, as for `AdaptiveRuntime`.
        graphs: capture batch-1 segments and the batch-1 plain backbone as CUDA graphs (CUDA
            devices only; elsewhere the same segments run eagerly). False: eager on the GPU too,
            for eager-against-eager comparisons.
    """

    def __init__(
        self,
        model: MultiExitNetwork,
        policy: ExitPolicy,
        *,
        check_inputs: bool = True,
        optimize: bool = True,
        graphs: bool = True,
    ) -> None:
        super().__init__(model, policy, check_inputs=check_inputs, optimize=optimize)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.graphs = graphs and self.device.type == "cuda"
        self._captured: dict[tuple[Any, ...], _Graphs] = {}  # shared by `with_policy` copies
        self._plain_graphs: dict[
            tuple[Any, ...], tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]
        ] = {}
        self._set_rule()

    def _set_rule(self) -> None:
        self.rule = threshold_rule(self.policy, self._last)
        if self.rule is None:
            logger.info(
                "%s is not a threshold rule: batch 1 asks its stop_one (its own host reads) after each exit",
                type(self.policy).__name__,
            )

    def with_policy(self, policy: ExitPolicy) -> CudaAdaptiveRuntime:
        """A runtime sharing these stages, exits and captured graphs under another policy."""
        other = cast(CudaAdaptiveRuntime, super().with_policy(policy))  # a shallow copy of self
        other._set_rule()
        return other

    def __call__(self, x: torch.Tensor) -> ExitResult:
        """Adaptive inference on a (B, C, H, W) batch on the model's device; B == 1 takes `run_single`."""
        if self.check_inputs:
            self.model.validate_input(x)
        if x.shape[0] == 1:
            logits, index = self.run_single(x)
            # torch.full launches a fill; torch.tensor([index]) would copy from the host and wait
            return ExitResult(logits, torch.full((1,), index, dtype=torch.long, device=logits.device))
        return self.run_batched(x)

    # ----------------------------------------------------------------------------- batch 1

    def _segment(
        self, i: int, x: torch.Tensor, state: torch.Tensor | None, score: str | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Stage i and exit i on (1, C, H, W): (map, logits, exit state, probe [score, finite] or None)."""
        x, logits, state = self.step(i, x, state)
        if score is None:
            return x, logits, state, None
        finite = torch.isfinite(logits).all().to(logits.dtype)
        return x, logits, state, torch.stack([confidence(logits, score)[0], finite])  # (2,)

    def _final(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.step(self._last, x, None).logits
        return logits, torch.isfinite(logits).all()

    def _eager_steps(self, x: torch.Tensor, score: str | None) -> Iterator[tuple[torch.Tensor, Any]]:
        """(logits, probe) of each exit in turn, computed as they are asked for."""
        state: torch.Tensor | None = None
        for i in range(self._last):
            x, logits, state, probe = self._segment(i, x, state, score)
            yield logits, probe
        yield self._final(x)

    def _graph_steps(self, x: torch.Tensor, score: str | None) -> Iterator[tuple[torch.Tensor, Any]]:
        """The same as `_eager_steps`, each exit one graph replay into static outputs."""
        chain = self._chain(x, score)
        chain.input.copy_(x)
        for graph, outputs in zip(chain.graphs, chain.outputs, strict=True):
            graph.replay()
            yield outputs

    def _chain(self, x: torch.Tensor, score: str | None) -> _Graphs:
        """The captured chain for x's shape and dtype (captured on first use: ~ms per segment)."""
        key = (tuple(x.shape), x.dtype, score)
        chain = self._captured.get(key)
        if chain is not None:
            return chain
        chain = _Graphs(x.detach().clone())
        feats, state = chain.input, None
        for i in range(self._last):
            graph, (feats, logits, state, probe) = _capture(
                partial(self._segment, i, feats, state, score), self.device
            )
            graph.replay()  # real values in the outputs, which the next segment warms up on
            chain.graphs.append(graph)
            chain.outputs.append((logits, probe))
        graph, final = _capture(partial(self._final, feats), self.device)
        chain.graphs.append(graph)
        chain.outputs.append(final)
        self._captured[key] = chain
        return chain

    @torch.inference_mode()
    def run_single(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One sample: (1, classes) logits and the 0-based exit it took; one host read per exit."""
        rule, policy, last = self.rule, self.policy, self._last
        score = rule.score if rule is not None else None
        steps = self._graph_steps(x, score) if self.graphs else self._eager_steps(x, score)
        own = _fresh if self.graphs else _same  # a graph's outputs are overwritten by its next replay
        pstate = policy.begin(1)
        for i, (logits, probe) in enumerate(steps):
            if i == last:
                if not _read(probe):
                    raise InputError(NAN_MESSAGE)
                return own(logits), last
            if rule is not None:
                stop = decide(_read(probe), rule.thresholds[i])
            else:
                stop, pstate = policy.stop_one(i, own(logits), pstate)
            if stop:
                return own(logits), i
        raise AssertionError("unreachable: the final exit always returns")

    @torch.inference_mode()
    def plain(self, x: torch.Tensor) -> torch.Tensor:
        """The plain backbone, treated as the adaptive path is: a CUDA graph at batch 1 when graphs are on."""
        if x.shape[0] != 1 or not self.graphs:
            return super().plain(x)
        key = (tuple(x.shape), x.dtype)
        if key not in self._plain_graphs:
            static = x.detach().clone()
            graph, out = _capture(lambda: _run(self.stages, static), self.device)
            self._plain_graphs[key] = (static, graph, out)
        static, graph, out = self._plain_graphs[key]
        static.copy_(x)
        graph.replay()
        return out.clone()

    # ----------------------------------------------------------------------------- batches

    @torch.inference_mode()
    def run_batched(self, x: torch.Tensor) -> ExitResult:
        """A batch where stopped samples leave and the rest go on; at most one host read per exit."""
        policy, last = self.policy, self._last
        n = x.shape[0]
        x = x.contiguous(memory_format=self.memory_format)
        alive = torch.arange(n, device=x.device)  # input positions of the samples in the batch
        exit_index = torch.full((n,), last, dtype=torch.long, device=x.device)
        out: torch.Tensor | None = None
        state: torch.Tensor | None = None
        pstate = policy.begin(n)
        for i in range(last):
            x, logits, state = self.step(i, x, state)  # logits (M, classes)
            stop, pstate = policy.stop(i, logits, pstate)  # (M,) bool, on the device
            if out is None:
                out = logits.new_empty(n, logits.shape[1])
            out.index_copy_(0, alive, logits)  # those that go on are overwritten later
            exit_index.index_fill_(0, alive, i)
            go_on = survivors(stop, logits)
            if go_on is None:
                continue
            if go_on.shape[0] == 0:
                return ExitResult(out, exit_index)
            x, alive = _select(x, go_on), alive.index_select(0, go_on)
            state = state.index_select(0, go_on) if state is not None else None
            if pstate is not None:  # stateless policies (the threshold rules) skip this
                pstate = policy.keep(pstate, ~stop)
        final = self.step(last, x, None).logits
        if not _read(torch.isfinite(final).all()):
            raise InputError(NAN_MESSAGE)
        if out is None:
            out = final.new_empty(n, final.shape[1])
        out.index_copy_(0, alive, final)
        exit_index.index_fill_(0, alive, last)
        return ExitResult(out, exit_index)


def _read(t: torch.Tensor) -> Any:
    """Copy a few numbers to the host: a host read (the device drains its queue first)."""
    return t.tolist()


def _nonzero(flags: torch.Tensor) -> torch.Tensor:
    """(K,) positions of the set flags: a host read (the count decides the output's size)."""
    return torch.nonzero(flags).view(-1)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _fresh(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def _select(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along the batch, keeping a channels-last map channels-last (as `runtime._take`)."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return x.index_select(0, index)


def _run(stages: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def _capture(fn: Callable[[], T], device: torch.device) -> tuple[torch.cuda.CUDAGraph, T]:
    """A CUDA graph of `fn` and its static outputs, after warm-up passes on a side stream.

    Warming up on a side stream, as torch's CUDA-graph notes advise, keeps lazily created
    handles and workspaces out of the default stream's capture.
    """
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        for _ in range(_WARMUP):
            fn()
    main.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def runtime_for(model: MultiExitNetwork, policy: ExitPolicy, **options: Any) -> AdaptiveRuntime:
    """The runtime made for where `model` lives: `CudaAdaptiveRuntime` on a GPU, else `AdaptiveRuntime`.

    Evaluation and tuning build their runtimes through this, so `--device cuda` times the
    design with one host read per exit, and the CPU keeps the design measured fastest there.
    """
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return CudaAdaptiveRuntime(model, policy, **options)
    return AdaptiveRuntime(model, policy, **options)
