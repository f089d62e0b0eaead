"""Named counters, gauges and histograms, exported in Prometheus' text format (version 0.0.4).

Small and dependency-free: the server's `/metrics` is `Telemetry.render()`. Every update takes
one lock, so the engine's thread and the HTTP event loop may both write. `recent` keeps the
last seconds of request latencies for the SLO controller (`bofexits.serving.slo`).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS", "Telemetry"]

#: Latency histogram bounds, seconds.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class _Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += n
        self.total += value * n

    def mean(self) -> float:
        n = sum(self.counts)
        return self.total / n if n else 0.0


class Telemetry:
    """The server's metrics for S stages (exits); `render` gives the Prometheus text.

    Args:
        num_stages: S.
        window_s: how long `recent` remembers request latencies.
    """

    def __init__(self, num_stages: int, *, window_s: float = 5.0) -> None:
        self.num_stages = num_stages
        self.window_s = window_s
        self._lock = threading.Lock()
        self.requests = {"ok": 0, "error": 0, "rejected": 0, "invalid": 0}
        self.exits = [0] * num_stages
        self.batches = [_Histogram(_BATCH_BUCKETS) for _ in range(num_stages)]
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.queue_wait = _Histogram(LATENCY_BUCKETS)
        self.depths = [0] * num_stages
        self.in_flight = 0
        self.batch_failures = 0
        self.beta = float("nan")
        self.expected_accuracy: float | None = None
        self.beta_changes = 0
        self._recent: deque[tuple[float, float]] = deque()

    # -------------------------------------------------------------- updates

    def count_request(self, status: str) -> None:
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1

    def stage_batch(self, stage: int, size: int, stopped: int, failed: bool = False) -> None:
        with self._lock:
            self.batches[stage].observe(size)
            self.exits[stage] += stopped
            self.batch_failures += int(failed)

    def answered(self, latency_s: float, wait_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.latency.observe(latency_s)
            self.queue_wait.observe(wait_s)
            self._recent.append((now, latency_s))
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()

    def set_state(self, depths: Sequence[int], in_flight: int) -> None:
        with self._lock:
            self.depths = list(depths)
            self.in_flight = in_flight

    def set_beta(self, beta: float, expected: float | None) -> None:
        with self._lock:
            if beta != self.beta and not math.isnan(self.beta):
                self.beta_changes += 1
            self.beta, self.expected_accuracy = float(beta), expected

    # -------------------------------------------------------------- reads

    def recent(self, now: float | None = None, since_s: float | None = None) -> list[float]:
        """Latencies (seconds) of the requests answered in the last `since_s` (default: the window)."""
        now = time.monotonic() if now is None else now
        horizon = now - (self.window_s if since_s is None else since_s)
        with self._lock:
            return [lat for t, lat in self._recent if t >= horizon]

    def mean_batch(self, stage: int) -> float:
        with self._lock:
            return self.batches[stage].mean()

    def render(self) -> str:
        """Prometheus text exposition of every metric."""
        out: list[str] = []
        with self._lock:
            self._family(
                out,
                "bofexits_requests_total",
                "counter",
                "requests by outcome",
                [((("status", k),), v) for k, v in self.requests.items()],
            )
            self._family(
                out,
                "bofexits_exits_total",
                "counter",
                "answers per exit taken (1-based)",
                [((("exit", str(i + 1)),), v) for i, v in enumerate(self.exits)],
            )
            self._family(
                out,
                "bofexits_queue_depth",
                "gauge",
                "samples waiting per stage queue",
                [((("stage", str(i + 1)),), v) for i, v in enumerate(self.depths)],
            )
            self._family(
                out,
                "bofexits_in_flight",
                "gauge",
                "requests accepted and not yet answered",
                [((), self.in_flight)],
            )
            self._family(
                out,
                "bofexits_batch_failures_total",
                "counter",
                "stage batches that raised",
                [((), self.batch_failures)],
            )
            self._family(out, "bofexits_beta", "gauge", "the knob in use", [((), self.beta)])
            self._family(
                out,
                "bofexits_beta_changes_total",
                "counter",
                "times the SLO controller moved beta",
                [((), self.beta_changes)],
            )
            if self.expected_accuracy is not None:
                self._family(
                    out,
                    "bofexits_expected_exit_accuracy",
                    "gauge",
                    "accuracy the calibration promises an early answer at this beta",
                    [((), self.expected_accuracy)],
                )
            out.append("# HELP bofexits_stage_batch_size samples per stage batch")
            out.append("# TYPE bofexits_stage_batch_size histogram")
            for i, h in enumerate(self.batches):
                self._histogram(out, "bofexits_stage_batch_size", h, (("stage", str(i + 1)),))
            for name, h, about in (
                ("bofexits_request_latency_seconds", self.latency, "arrival to answer"),
                ("bofexits_queue_wait_seconds", self.queue_wait, "time spent waiting in stage queues"),
            ):
                out.append(f"# HELP {name} {about}")
                out.append(f"# TYPE {name} histogram")
                self._histogram(out, name, h, ())
        return "\n".join(out) + "\n"

    @staticmethod
    def _family(
        out: list[str],
        name: str,
        kind: str,
        about: str,
        samples: list[tuple[tuple[tuple[str, str], ...], float]],
    ) -> None:
        out.append(f"# HELP {name} {about}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{_labels(labels)} {_num(v)}" for labels, v in samples)

    @staticmethod
    def _histogram(out: list[str], name: str, h: _Histogram, labels: tuple[tuple[str, str], ...]) -> None:
        running = 0
        for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
            running += count
            out.append(f"{name}_bucket{_labels((*labels, ('le', _num(bound))))} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_num(h.total)}")
        out.append(f"{name}_count{_labels(labels)} {running}")
