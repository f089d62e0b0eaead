"""The engine: drives the step protocol over the scheduler's stage batches and answers requests.

`Engine.run_once` is one scheduling decision: the `Scheduler` names a stage and hands over up
to `max_batch` samples (groups of different requests); the engine concatenates them, runs the
backend's `step` (stage i and its exit) and `decide` (the policy's stop), answers the samples
that stop and queues the rest as one group at stage i+1. It is the serving form of
`bofexits.inference.route`: the same step and decision, with the batch re-formed at each
stage from everyone waiting there instead of shrinking.

`Engine.start` runs it on a worker thread for a server (the HTTP app, a Ray replica);
`Engine.run_until_idle` runs it inline for bulk work (`bofexits predict`). Callbacks get an
`Answer` or the exception that failed their batch; a failing batch fails only its own
requests and the engine goes on. `max_queue` bounds what is accepted and not answered:
past it `submit` raises `Overloaded`, so memory never grows without bound.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from bofexits.errors import BofexitsError, ConfigError, InputError
from bofexits.serving.scheduler import Batch, Group, Scheduler
from bofexits.serving.stages import StageBackend, expected_accuracy
from bofexits.serving.telemetry import Telemetry

__all__ = ["Answer", "Engine", "Overloaded", "ShuttingDown"]

logger = logging.getLogger(__name__)

NAN_MESSAGE = "an exit produced NaN or inf logits; the weights are broken (reload a good checkpoint)"


class Overloaded(BofexitsError):
    """More requests in flight than `max_queue`: retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(BofexitsError):
    """The engine is draining and takes no new requests."""


@dataclass
class Answer:
    """One sample's answer.

    Attributes:
        class_index: the predicted class.
        confidence: top softmax probability at the exit taken.
        exit: 1-based exit taken (num_exits = the full network).
        num_exits: S.
        latency_ms: from `submit` to the answer.
        queue_ms: of which waiting in stage queues.
        beta: the knob the last decision used.
    """

    class_index: int
    confidence: float
    exit: int
    num_exits: int
    latency_ms: float
    queue_ms: float
    beta: float


Callback = Callable[[int, "Answer | BaseException"], None]


@dataclass
class _Request:
    row: int  # position in the submit call's batch, handed back to the callback
    arrived: float
    on_done: Callback
    waited: float = 0.0


class _Payload(NamedTuple):
    x: Any  # (n, ...) input of the group's stage
    state: Any  # exit state from the previous exit, or None
    pstate: Any  # policy state, or None


@dataclass
class _Health:
    failures: int = 0
    last_failure: str | None = None
    stopping: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Stage-level continuous batching over a `StageBackend` (module docstring).

    Args:
        backend: the staged model (`TorchStages`, `OnnxStages`, or a fake in tests).
        max_batch: most samples per stage batch.
        max_wait_ms: how long a queue's oldest sample waits before that queue goes first.
        max_queue: most requests accepted and not yet answered.
        telemetry: where metrics go (a new one by default).
        controller: called as ``controller(engine, now)`` after each batch and when idle (the
            SLO controller turns beta); None: beta stays.
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        backend: StageBackend,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        telemetry: Telemetry | None = None,
        controller: Callable[[Engine, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, got {max_queue}")
        self.backend = backend
        self.num_exits = backend.num_exits
        self.scheduler: Scheduler[_Payload] = Scheduler(
            backend.num_exits, max_batch=max_batch, max_wait_s=max_wait_ms / 1e3
        )
        self.max_queue = max_queue
        self.telemetry = telemetry or Telemetry(backend.num_exits)
        self.controller = controller
        self.clock = clock
        self.in_flight = 0
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._health = _Health()
        self._service_s = 0.0  # smoothed seconds of engine time per answered sample, for Retry-After
        self.telemetry.set_beta(backend.beta, expected_accuracy(backend.facts.variant, backend.beta))

    # ------------------------------------------------------------------ intake

    def submit(self, x: np.ndarray, on_done: Callback) -> None:
        """Queue n preprocessed samples, (n, C, H, W) float32; ``on_done(row, answer_or_error)`` per sample.

        Raises:
            InputError: a wrong shape, or NaN/inf values (refused before they can share a batch).
            Overloaded: accepting them would put more than `max_queue` requests in flight.
            ShuttingDown: the engine is draining.
        """
        shape = tuple(self.backend.facts.input_shape)
        if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != shape or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, np.ndarray) else type(x).__name__
            raise InputError(f"expected a (n, {', '.join(map(str, shape))}) float32 array with n >= 1, got {got}")
        if not bool(np.isfinite(x).all()):  # checked here, so one bad request cannot fail a shared batch
            raise InputError("the input contains NaN or inf values; send finite, normalised inputs")
        n = int(x.shape[0])
        payload = _Payload(self.backend.from_numpy(x), None, self.backend.begin(n))
        with self._work:
            if self._health.stopping:
                raise ShuttingDown("the server is shutting down; retry on another replica")
            if self.in_flight + n > self.max_queue:
                self.telemetry.count_request("rejected")
                raise Overloaded(
                    f"{self.in_flight} requests in flight, the limit is {self.max_queue}; retry later",
                    self.retry_after_s(),
                )
            now = self.clock()
            requests = [_Request(k, now, on_done) for k in range(n)]
            self.scheduler.add(0, Group(requests, payload, now))
            self.in_flight += n
            self._work.notify()

    def retry_after_s(self) -> float:
        """How long the queue ahead takes to clear at the recent service rate (at least 1 s)."""
        return max(1.0, math.ceil(self.in_flight * self._service_s))

    # ------------------------------------------------------------------ one step

    def _split(self, group: Group[_Payload], k: int) -> tuple[Group[_Payload], Group[_Payload]]:
        """The first k samples of `group` and the rest, as two groups."""
        n = len(group)
        head, tail = np.arange(k), np.arange(k, n)
        mask = np.zeros(n, dtype=bool)
        mask[:k] = True
        b, p = self.backend, group.payload
        first = _Payload(b.take(p.x, head), b.take(p.state, head), b.keep_states(p.pstate, mask))
        rest = _Payload(b.take(p.x, tail), b.take(p.state, tail), b.keep_states(p.pstate, ~mask))
        return (
            Group(group.requests[:k], first, group.enqueued),
            Group(group.requests[k:], rest, group.enqueued),
        )

    def run_once(self) -> int:
        """Run one stage batch; returns its size (0: nothing to do)."""
        with self._lock:
            now = self.clock()
            batch = self.scheduler.next_batch(now, self._split)
            self._publish_state()
        if batch is None:
            return 0
        t0 = time.perf_counter()
        requests = [r for g in batch.groups for r in g.requests]
        for g in batch.groups:
            for r in g.requests:
                r.waited += now - g.enqueued
        try:
            stop, survivors, beta = self._run(batch)
        except Exception as exc:  # one batch's failure is its requests' alone
            self._fail(batch, requests, exc)
            return batch.size
        done = self.clock()
        going: list[_Request] = []
        for r, answer in zip(requests, stop, strict=True):
            if answer is None:
                going.append(r)
            else:
                latency, waited = 1e3 * (done - r.arrived), 1e3 * r.waited
                self._answer(r, Answer(*answer, self.num_exits, latency, waited, beta), done)
        stopped = len(requests) - len(going)
        with self._lock:
            if survivors is not None:
                self.scheduler.add(batch.stage + 1, Group(going, survivors, done))
            self.in_flight -= stopped
            self._publish_state()
        self.telemetry.stage_batch(batch.stage, batch.size, stopped)
        elapsed = time.perf_counter() - t0
        if stopped:
            self._service_s = 0.9 * self._service_s + 0.1 * elapsed / stopped
        return batch.size

    def _run(
        self, batch: Batch[_Payload]
    ) -> tuple[list[tuple[int, float, int] | None], _Payload | None, float]:
        """Step and decide on one batch: per sample (class, confidence, exit) or None (goes on)."""
        b, i, last = self.backend, batch.stage, self.num_exits - 1
        payloads = [g.payload for g in batch.groups]
        x = b.cat([p.x for p in payloads])
        state = b.cat([p.state for p in payloads])
        pstate = b.join_states([p.pstate for p in payloads])
        beta = b.beta
        features, logits, state = b.step(i, x, state)
        scores = b.to_numpy(logits)
        if not bool(np.isfinite(scores).all()):
            raise InputError(NAN_MESSAGE)
        if i == last:
            stop = np.ones(scores.shape[0], dtype=bool)
        else:
            stop, pstate = b.decide(i, logits, pstate)
        classes = scores.argmax(1)
        top = scores.max(1, keepdims=True)
        conf = 1.0 / np.exp(scores - top).sum(1)
        out: list[tuple[int, float, int] | None] = [
            (int(classes[j]), float(conf[j]), i + 1) if stop[j] else None for j in range(scores.shape[0])
        ]
        if bool(stop.all()):
            return out, None, beta
        go_on = ~stop
        idx = np.flatnonzero(go_on)
        return out, _Payload(b.take(features, idx), b.take(state, idx), b.keep_states(pstate, go_on)), beta

    def _answer(self, r: _Request, answer: Answer | BaseException, now: float) -> None:
        if isinstance(answer, Answer):
            self.telemetry.answered((now - r.arrived), r.waited, now)
            self.telemetry.count_request("ok")
        else:
            self.telemetry.count_request("error")
        try:
            r.on_done(r.row, answer)
        except Exception:  # a caller's callback must not stop the engine
            logger.exception("a request's callback raised; the engine goes on")

    def _fail(self, batch: Batch[_Payload], requests: list[_Request], exc: Exception) -> None:
        message = str(exc) if isinstance(exc, BofexitsError) else f"{type(exc).__name__}: {exc}"
        logger.error("stage %d batch of %d failed: %s", batch.stage + 1, batch.size, message)
        with self._lock:
            self._health.failures += 1
            self._health.last_failure = message
            self.in_flight -= len(requests)
            self._publish_state()
        self.telemetry.stage_batch(batch.stage, batch.size, 0, failed=True)
        now = self.clock()
        for r in requests:
            self._answer(r, exc, now)

    def _publish_state(self) -> None:
        self.telemetry.set_state(self.scheduler.depths(), self.in_flight)

    # ------------------------------------------------------------------ knob

    @property
    def beta(self) -> float:
        return float(self.backend.beta)

    def set_beta(self, beta: float) -> None:
        """Use knob `beta` from the next stage batch on."""
        self.backend.set_beta(beta)
        self.telemetry.set_beta(beta, expected_accuracy(self.backend.facts.variant, beta))

    def oldest_wait_s(self) -> float:
        with self._lock:
            return self.scheduler.oldest(self.clock())

    # ------------------------------------------------------------------ running

    def run_until_idle(self) -> None:
        """Run stage batches inline until every queue is empty (bulk work)."""
        while self.run_once():
            if self.controller is not None:
                self.controller(self, self.clock())

    def start(self) -> None:
        """Run the engine on a daemon worker thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="bofexits-engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._work:
                if not len(self.scheduler):
                    if self._health.stopping:
                        return
                    self._work.wait(timeout=0.05)  # an idle tick: the controller may raise beta back
            try:
                self.run_once()
                if self.controller is not None:
                    self.controller(self, self.clock())
            except Exception:  # never let the worker die: log and go on
                logger.exception("the engine loop raised; it goes on")

    def stop(self, *, timeout_s: float = 30.0) -> bool:
        """Refuse new requests, answer every accepted one, then stop the worker. True when drained."""
        with self._work:
            self._health.stopping = True
            self._work.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            drained = not self._thread.is_alive()
        else:
            self.run_until_idle()
            drained = True
        return drained and self.in_flight == 0

    def health(self) -> dict[str, Any]:
        """JSON-ready: serving/draining, requests in flight, failed batches and the last failure, beta."""
        with self._lock:
            return {
                "status": "draining" if self._health.stopping else "ok",
                "in_flight": self.in_flight,
                "queue_depths": self.scheduler.depths(),
                "batch_failures": self._health.failures,
                "last_failure": self._health.last_failure,
                "beta": self.beta,
                "worker_alive": self._thread is not None and self._thread.is_alive(),
            }
