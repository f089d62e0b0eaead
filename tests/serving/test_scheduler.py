"""The scheduler alone, with fake groups: which stage runs next and how batches are cut."""

from __future__ import annotations

import sys

import pytest

from bofexits.errors import ConfigError
from bofexits.serving.scheduler import Group, Scheduler


def _split(group: Group[list[str]], k: int) -> tuple[Group[list[str]], Group[list[str]]]:
    return (
        Group(group.requests[:k], group.payload[:k], group.enqueued),
        Group(group.requests[k:], group.payload[k:], group.enqueued),
    )


def _group(names: str, at: float = 0.0) -> Group[list[str]]:
    return Group(list(names), list(names), at)


def test_a_lone_request_goes_straight_through_every_stage() -> None:
    s: Scheduler[list[str]] = Scheduler(4, max_batch=8, max_wait_s=1.0)
    s.add(0, _group("a"))
    for stage in range(4):
        batch = s.next_batch(0.0, _split)
        assert batch is not None and batch.stage == stage and batch.size == 1
        if stage < 3:
            s.add(stage + 1, batch.groups[0])  # it goes on
    assert s.next_batch(0.0, _split) is None and len(s) == 0


def test_full_batches_go_first_deepest_first() -> None:
    s: Scheduler[list[str]] = Scheduler(3, max_batch=2, max_wait_s=1.0)
    s.add(0, _group("abc"))
    s.add(1, _group("de"))
    s.add(2, _group("f"))
    assert s.pick(0.0) == 1  # stages 0 and 1 are full: the deeper one
    batch = s.next_batch(0.0, _split)
    assert batch is not None and [r for g in batch.groups for r in g.requests] == ["d", "e"]
    assert s.pick(0.0) == 0 and s.depths() == [3, 0, 1]


def test_an_overdue_queue_beats_a_longer_one() -> None:
    s: Scheduler[list[str]] = Scheduler(3, max_batch=10, max_wait_s=0.005)
    s.add(0, _group("abcd", at=1.0))
    s.add(2, _group("x", at=0.990))
    assert s.pick(0.992) == 0  # nobody overdue yet: the longest queue
    assert s.pick(1.0) == 2  # stage 2's sample has waited 10 ms > 5 ms


def test_batches_are_cut_at_max_batch_and_the_rest_keeps_its_place() -> None:
    s: Scheduler[list[str]] = Scheduler(2, max_batch=3, max_wait_s=1.0)
    s.add(1, _group("ab", at=0.1))
    s.add(1, _group("cd", at=0.2))
    s.add(1, _group("e", at=0.3))
    batch = s.next_batch(0.5, _split)
    assert batch is not None and batch.size == 3
    assert [g.payload for g in batch.groups] == [["a", "b"], ["c"]]
    rest = s.queues[1][0]
    assert rest.requests == ["d"] and rest.enqueued == 0.2  # its place and age are kept
    batch = s.next_batch(0.5, _split)
    assert batch is not None and [g.requests for g in batch.groups] == [["d"], ["e"]]
    assert len(s) == 0


def test_drain_and_bad_settings() -> None:
    s: Scheduler[list[str]] = Scheduler(2, max_batch=3, max_wait_s=1.0)
    s.add(0, _group("ab"))
    s.add(0, _group(""))  # empty groups are dropped
    assert len(s.drain()) == 1 and len(s) == 0 and s.oldest(5.0) == 0.0
    with pytest.raises(ConfigError, match="max_batch"):
        Scheduler(2, max_batch=0, max_wait_s=0)
    with pytest.raises(ConfigError, match="max_wait"):
        Scheduler(2, max_batch=1, max_wait_s=-1)


def test_the_scheduler_needs_no_torch() -> None:
    import subprocess

    code = "import sys, bofexits.serving.scheduler, bofexits.serving; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
