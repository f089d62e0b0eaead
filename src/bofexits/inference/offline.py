"""Offline evaluation: a policy simulated from all exits' outputs, computed once.

`simulate` replays what `AdaptiveRuntime.run_batched` does, with precomputed logits in place
of the stages: the policy's own `begin`, `stop` and `keep` are called exit by exit on the
shrinking set of samples still running, so the results are the runtime's (same exits, same
predictions) while sweeping a knob costs no network evaluation. Compute is then counted
from the exits taken (`CostTable.macs_for`); wall-clock needs the real runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bofexits.errors import InputError
from bofexits.inference.runtime import ExitResult, route
from bofexits.policies.base import ExitPolicy

__all__ = ["oracle", "oracle_exits", "oracle_frontier", "simulate"]


def _check_exit_logits(exit_logits: Sequence[torch.Tensor]) -> int:
    """N, after checking that the S exits' logits are (N, classes) tensors of one shape."""
    if not exit_logits:
        raise InputError("need the logits of every exit, got an empty list")
    shape = exit_logits[0].shape
    if len(shape) != 2 or any(lg.shape != shape for lg in exit_logits):
        raise InputError(
            f"exit logits must all be (N, classes) of one shape, got {[tuple(lg.shape) for lg in exit_logits]}"
        )
    return int(shape[0])


@torch.no_grad()
def simulate(policy: ExitPolicy, exit_logits: Sequence[torch.Tensor]) -> ExitResult:
    """A policy's decisions simulated from all exits (outputs computed once, e.g. `collect_logits`).

    Like the runtime, only the logits a sample actually reaches are checked and used: a
    sample that left at exit i never looks at exits after i.

    Args:
        policy: any `ExitPolicy`.
        exit_logits: [(N, classes)] * S, every exit including the final one.

    Returns:
        `ExitResult` with (N, classes) logits of the exit taken and (N,) int64 exit indices,
        on the logits' device.

    Raises:
        InputError: NaN or inf logits at an exit a sample reached, or mismatched shapes.

    >>> from bofexits.policies.fixed import SingleExit
    >>> simulate(SingleExit(1), [torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3)]).exit_index.tolist()
    [1, 1]
    """
    n = _check_exit_logits(exit_logits)
    policy.check_exits(len(exit_logits))
    return route(
        policy, len(exit_logits), n, lambda i, alive, _: exit_logits[i][alive], exit_logits[0].device
    )


def oracle_exits(exit_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Earliest exit whose prediction is correct (the final exit when none is): a lower bound.

    >>> oracle_exits([torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])],
    ...              torch.tensor([0, 1])).tolist()
    [0, 1]
    """
    correct = torch.stack([lg.argmax(1) == labels for lg in exit_logits], 1)  # (N, S)
    correct[:, -1] = True
    return correct.float().argmax(1)


def oracle(exit_logits: Sequence[torch.Tensor], labels: torch.Tensor) -> ExitResult:
    """The earliest exit whose prediction is correct (the final exit when none is): a lower bound.

    Args:
        exit_logits: [(N, classes)] * S, every exit including the final one.
        labels: (N,) true classes.

    Returns:
        `ExitResult` with the logits of the exit taken and its (N,) int64 index.

    >>> oracle([torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])],
    ...        torch.tensor([0, 1])).exit_index.tolist()
    [0, 1]
    """
    n = _check_exit_logits(exit_logits)
    if labels.shape != (n,):
        raise InputError(f"labels must be ({n},) to match the exit logits, got {tuple(labels.shape)}")
    index = oracle_exits(exit_logits, labels.to(exit_logits[0].device))
    logits = torch.stack(list(exit_logits))[index, torch.arange(n, device=index.device)]
    return ExitResult(logits, index)


def oracle_frontier(
    exit_logits: Sequence[torch.Tensor], labels: torch.Tensor, macs_at_exit: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best accuracy any exit assignment reaches at each mean compute: the bound for every policy.

    Everyone starts at exit 1 (the cheapest possible). A sample wrong there becomes correct
    only by going to its earliest correct exit, at a known extra cost; buying those in order
    of increasing cost traces the upper frontier, ending at the `oracle` point.

    Args:
        exit_logits: [(N, classes)] * S.
        labels: (N,) true classes.
        macs_at_exit: S cumulative MACs of leaving at each exit (`CostTable.macs_at_exit()`).

    Returns:
        (mean MACs (M,), accuracy (M,)), both non-decreasing, M = 1 + samples an exit can fix.

    >>> logits = [torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])]
    >>> macs, acc = oracle_frontier(logits, torch.tensor([0, 1]), [1.0, 3.0])
    >>> macs.tolist(), acc.tolist()
    ([1.0, 2.0], [0.5, 1.0])
    """
    n = _check_exit_logits(exit_logits)
    if labels.shape != (n,) or len(macs_at_exit) != len(exit_logits):
        raise InputError(
            f"need ({n},) labels and {len(exit_logits)} exit costs, got {tuple(labels.shape)} and "
            f"{len(macs_at_exit)}"
        )
    correct = torch.stack([lg.argmax(1).cpu() == labels.cpu() for lg in exit_logits], 1)  # (N, S)
    macs = torch.as_tensor(list(macs_at_exit), dtype=torch.float64)
    fixable = correct.any(1) & ~correct[:, 0]
    earliest = correct.float().argmax(1)[fixable]
    extra = (macs[earliest] - macs[0]).sort().values  # cheapest fixes first
    base_correct = int(correct[:, 0].sum())
    mean_macs = macs[0] + torch.cat([torch.zeros(1, dtype=torch.float64), extra.cumsum(0)]) / n
    acc = (base_correct + torch.arange(extra.numel() + 1, dtype=torch.float64)) / n
    return mean_macs, acc
