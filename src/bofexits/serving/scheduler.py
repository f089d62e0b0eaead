"""What runs next: one queue per stage, stage-level continuous batching (no torch, no HTTP).

Requests enter stage 0's queue. Each scheduling decision picks one stage and takes up to
`max_batch` samples from its queue; the engine runs that stage and its exit, answers the
samples that stop, and puts the ones that go on into the next stage's queue as one `Group`,
beside the survivors of other requests. So every stage runs full batches when there is load
(the survivors are re-batched, not trickled), and a lone request goes straight through.

Which stage (`Scheduler.pick`), in order:

1. a stage whose queue holds a full batch (`max_batch` samples): the deepest one, since
   its samples are the oldest and nearest their answer;
2. else a stage whose oldest sample has waited `max_wait_s`: the one waiting longest, so a
   deep queue that fills slowly under load is not starved;
3. else (no full batch, nobody overdue): the longest queue, the deepest on ties. The
   scheduler never idles while there is work, so a lone request waits for nothing.

Groups are opaque here: `len(group)` samples and an `enqueued` time; splitting one that would
overflow a batch is the engine's (`split` callback), which knows the arrays.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bofexits.errors import ConfigError

__all__ = ["Batch", "Group", "Scheduler"]

P = TypeVar("P")


@dataclass
class Group(Generic[P]):
    """Samples that travel together through a stage queue.

    Attributes:
        requests: one entry per sample, in the payload's row order (opaque here).
        payload: the samples' arrays (the engine's; opaque here).
        enqueued: when the group joined its current queue (the scheduler's clock).
    """

    requests: list[Any]
    payload: P
    enqueued: float

    def __len__(self) -> int:
        return len(self.requests)


@dataclass
class Batch(Generic[P]):
    """One scheduling decision: run `stage` on the samples of `groups` (at most `max_batch`)."""

    stage: int
    groups: list[Group[P]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(g) for g in self.groups)


class Scheduler(Generic[P]):
    """One FIFO queue per stage and the rule that picks the next stage batch (module docstring).

    Args:
        num_stages: S, the number of stages (exits) of the network.
        max_batch: the most samples one stage batch takes.
        max_wait_s: how long the oldest sample of a queue may wait before that queue goes first.

    >>> s = Scheduler(3, max_batch=4, max_wait_s=0.01)
    >>> s.add(0, Group(["a"], None, 0.0)); s.add(1, Group(["b"], None, 0.0))
    >>> s.pick(0.0)  # no full batch, nobody overdue: longest queue, deepest on ties
    1
    """

    def __init__(self, num_stages: int, *, max_batch: int, max_wait_s: float) -> None:
        if num_stages < 1:
            raise ConfigError(f"a network has at least one stage, got {num_stages}")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if not max_wait_s >= 0:
            raise ConfigError(f"max_wait must be >= 0, got {max_wait_s}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queues: list[deque[Group[P]]] = [deque() for _ in range(num_stages)]
        self._sizes = [0] * num_stages

    def add(self, stage: int, group: Group[P]) -> None:
        """Append `group` to stage `stage`'s queue (empty groups are dropped)."""
        if len(group):
            self.queues[stage].append(group)
            self._sizes[stage] += len(group)

    def depths(self) -> list[int]:
        """Samples waiting per stage."""
        return list(self._sizes)

    def __len__(self) -> int:
        """Samples waiting in all queues."""
        return sum(self._sizes)

    def oldest(self, now: float) -> float:
        """How long the longest-waiting sample has waited (0 when every queue is empty)."""
        heads = [q[0].enqueued for q in self.queues if q]
        return now - min(heads) if heads else 0.0

    def pick(self, now: float) -> int | None:
        """The stage to run next (module docstring), or None when every queue is empty."""
        sizes = self._sizes
        full = [i for i, n in enumerate(sizes) if n >= self.max_batch]
        if full:
            return full[-1]
        waits = [(now - q[0].enqueued, i) for i, q in enumerate(self.queues) if q]
        if not waits:
            return None
        wait, stage = max(waits)
        if wait >= self.max_wait_s:
            return stage
        return max(range(len(sizes)), key=lambda i: (sizes[i], i))

    def next_batch(
        self, now: float, split: Callable[[Group[P], int], tuple[Group[P], Group[P]]]
    ) -> Batch[P] | None:
        """Take the next stage batch off its queue, or None when there is no work.

        Groups come off in FIFO order until `max_batch` samples; one that would overflow is
        split with ``split(group, k) -> (first k samples, the rest)``, and the rest stays at the
        head of the queue with its place and enqueue time.
        """
        stage = self.pick(now)
        if stage is None:
            return None
        queue, batch, room = self.queues[stage], Batch[P](stage), self.max_batch
        while queue and room:
            group = queue.popleft()
            if len(group) > room:
                group, rest = split(group, room)
                queue.appendleft(rest)
            batch.groups.append(group)
            room -= len(group)
        self._sizes[stage] -= batch.size
        return batch

    def drain(self) -> Sequence[Group[P]]:
        """Remove and return every waiting group (shutting down without running them)."""
        out = [g for q in self.queues for g in q]
        for q in self.queues:
            q.clear()
        self._sizes = [0] * len(self._sizes)
        return out
