"""Running a trained multi-exit network adaptively.

* `runtime`: real early exit (`AdaptiveRuntime`): batch 1 stops at the first exit the policy
  accepts and later stages never run; batches shrink as samples leave. `AdaptiveRuntime.step`
  (stage i and its exit) is the step every loop is made of, the serving engine's included
  (`bofexits.serving`); `route` is the one shrinking-batch routing loop, shared with
* `offline`: the same policy replayed on all exits' precomputed outputs (`simulate`), and the
  oracle (earliest correct exit) that bounds every policy.
* `gpu`: real early exit designed for CUDA (`CudaAdaptiveRuntime`): at most one host read
  per exit, and the batch-1 segments replayed as CUDA graphs; `runtime_for` picks the
  runtime made for where the model lives.
"""

from __future__ import annotations

from bofexits.inference.gpu import CudaAdaptiveRuntime, runtime_for
from bofexits.inference.offline import oracle, oracle_frontier, simulate
from bofexits.inference.runtime import AdaptiveRuntime, ExitResult, StepOutput, route

__all__ = [
    "AdaptiveRuntime",
    "CudaAdaptiveRuntime",
    "ExitResult",
    "StepOutput",
    "oracle",
    "oracle_frontier",
    "route",
    "runtime_for",
    "simulate",
]
