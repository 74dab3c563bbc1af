"""The inference path's metrics, per model name and version, as Prometheus instruments.

One source for every consumer: the counters below are what `GET /metrics` exports
(modelforge_site.metrics), and the same calls add to the per-minute statistics the admin
dashboard reads (inference.serving_stats). Nothing else counts these events.

- ``executed`` is called once per session run, by the predict service and the batching
  scheduler: ``modelforge_inferences_total`` counts the requests it answered and
  ``modelforge_executions_total`` the runs; their ratio is the mean batch size.
- ``request_finished`` is called once per answered predict or /v2 infer request, by
  core.request_log: requests by outcome, the request, queue and compute duration
  histograms, and cache hits and misses.

Under a server with several worker processes (granian, `make serve`), set
PROMETHEUS_MULTIPROC_DIR to an empty directory before start: prometheus_client then keeps
each process's values in files there, and a scrape of any process adds them up.

Requests add to plain in-process sums (`_Pending`: one lock, a few additions), which are added
to the instruments at most FLUSH_SECONDS later by a thread of the process, before any
collection of the default registry (a scrape, `REGISTRY.get_sample_value`), at a scrape of this
process and at its exit. Incrementing the instruments themselves costs ten value updates per
request, each a lock and a write to a memory-mapped file in multiprocess mode: more than the
rest of the request's bookkeeping (docs/performance.md, issue 18). A scrape of another process
may so lag this one by up to FLUSH_SECONDS.
"""

from __future__ import annotations

import atexit
import bisect
import multiprocessing.util
import os
import threading
import time

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from core.threads import Restartable
from inference.models import LATENCY_BOUNDS_MS
from inference.serving_stats import serving_stats

# prometheus_client reads the variable when it is imported; so does this.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LABELS = ("model", "version")
OUTCOMES = ("ok", "cached", "client_error", "server_error", "rejected")
# The buckets of the per-minute statistics, in seconds: one set of bounds everywhere.
_SECONDS = tuple(bound / 1000 for bound in LATENCY_BOUNDS_MS if bound is not None)
# How long counts may wait in the process before they reach the instruments.
FLUSH_SECONDS = 0.5


class _FlushFirst:
    """Registered in the default registry before the instruments: a collection of it (a scrape,
    `REGISTRY.get_sample_value`) adds what is pending first."""

    def describe(self):
        return ()  # no metrics of its own (and registering it must not collect it)

    def collect(self):
        pending.flush()
        return ()


REGISTRY.register(_FlushFirst())

REQUESTS = Counter(
    "modelforge_requests",
    "Predict and /v2 infer requests answered, by outcome: ok (the model ran), cached, client_error "
    "(4xx), server_error (5xx), rejected (429, or 503 with Retry-After: a full queue or a limit).",
    [*LABELS, "outcome"],
)
INFERENCES = Counter("modelforge_inferences", "Requests answered by running the model.", LABELS)
EXECUTIONS = Counter(
    "modelforge_executions", "Session runs (one per batch); inferences / executions = mean batch size.", LABELS
)
ROWS = Counter("modelforge_rows", "Input rows (first dimension) run through the model.", LABELS)
CACHE_HITS = Counter("modelforge_cache_hits", "Requests answered from the prediction cache.", LABELS)
CACHE_MISSES = Counter("modelforge_cache_misses", "Requests that looked up the cache and ran the model.", LABELS)
REQUEST_SECONDS = Histogram(
    "modelforge_request_duration_seconds", "Time in the server per request.", LABELS, buckets=_SECONDS
)
QUEUE_SECONDS = Histogram(
    "modelforge_queue_duration_seconds", "Time waiting in the batching queue, per request that ran.", LABELS,
    buckets=_SECONDS,
)  # fmt: skip
COMPUTE_SECONDS = Histogram(
    "modelforge_compute_duration_seconds", "ONNX Runtime time, per request that ran.", LABELS, buckets=_SECONDS
)


class _Instruments:
    """The children of one (model, version): `labels()` looked up once, not per request."""

    __slots__ = ("compute", "executions", "hits", "inferences", "misses", "outcomes", "queue", "request", "rows")

    def __init__(self, label: tuple[str, str]) -> None:
        self.outcomes = {outcome: REQUESTS.labels(*label, outcome) for outcome in OUTCOMES}
        self.inferences = INFERENCES.labels(*label)
        self.executions = EXECUTIONS.labels(*label)
        self.rows = ROWS.labels(*label)
        self.hits = CACHE_HITS.labels(*label)
        self.misses = CACHE_MISSES.labels(*label)
        self.request = REQUEST_SECONDS.labels(*label)
        self.queue = QUEUE_SECONDS.labels(*label)
        self.compute = COMPUTE_SECONDS.labels(*label)


_instruments: dict[tuple[str, str], _Instruments] = {}
_lock = threading.Lock()


def instruments(label: tuple[str, str]) -> _Instruments:
    found = _instruments.get(label)
    if found is None:
        with _lock:
            found = _instruments.get(label)
            if found is None:
                found = _instruments[label] = _Instruments(label)
    return found


def outcome_of(status: int, *, cached: bool | None, retry_after: bool) -> str:
    if status == 429 or (status == 503 and retry_after):
        return "rejected"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "cached" if cached else "ok"


# The slots of a label's pending sums: the outcomes' counts, then the counters, then each
# histogram's sum and buckets (as prometheus_client keeps them: a count per bucket, the last
# one unbounded, made cumulative when collected).
_BUCKETS = len(_SECONDS) + 1
_HITS, _MISSES, _INFERENCES, _EXECUTIONS, _ROWS = range(len(OUTCOMES), len(OUTCOMES) + 5)
_REQUEST = len(OUTCOMES) + 5
_QUEUE = _REQUEST + 1 + _BUCKETS
_COMPUTE = _QUEUE + 1 + _BUCKETS
_SLOTS = _COMPUTE + 1 + _BUCKETS
_OUTCOME_SLOT = {outcome: slot for slot, outcome in enumerate(OUTCOMES)}


class _Pending:
    """This process's counts and observations since the last flush, per (model, version)."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = Restartable(self._run, "metrics-flush")

    def request(self, label, outcome: str, cached: bool | None, seconds: float, queue, compute) -> None:
        with self._lock:
            sums = self._sums.get(label)
            if sums is None:
                sums = self._sums[label] = [0] * _SLOTS
            sums[_OUTCOME_SLOT[outcome]] += 1
            if cached is True:
                sums[_HITS] += 1
            elif cached is False:
                sums[_MISSES] += 1
            _observe(sums, _REQUEST, seconds)
            if compute is not None:
                _observe(sums, _QUEUE, queue)
                _observe(sums, _COMPUTE, compute)
        self._wake_writer()

    def executed(self, label, requests: int, rows: int) -> None:
        with self._lock:
            sums = self._sums.get(label)
            if sums is None:
                sums = self._sums[label] = [0] * _SLOTS
            sums[_INFERENCES] += requests
            sums[_EXECUTIONS] += 1
            sums[_ROWS] += rows
        self._wake_writer()

    def flush(self) -> None:
        """Add everything pending to the instruments now."""
        with self._flush_lock:
            with self._lock:
                taken, self._sums = self._sums, {}
            for label, sums in taken.items():
                found = instruments(label)
                for outcome, slot in _OUTCOME_SLOT.items():
                    if sums[slot]:
                        found.outcomes[outcome].inc(sums[slot])
                for slot, counter in (
                    (_HITS, found.hits),
                    (_MISSES, found.misses),
                    (_INFERENCES, found.inferences),
                    (_EXECUTIONS, found.executions),
                    (_ROWS, found.rows),
                ):
                    if sums[slot]:
                        counter.inc(sums[slot])
                for first, histogram in ((_REQUEST, found.request), (_QUEUE, found.queue), (_COMPUTE, found.compute)):
                    counts = sums[first + 1 : first + 1 + _BUCKETS]
                    if any(counts):
                        # prometheus_client's own per-bucket values: `observe` adds one at a
                        # time, and there is no public way to add many (tests/inference/test_metrics.py).
                        histogram._sum.inc(sums[first])
                        for bucket, count in zip(histogram._buckets, counts, strict=True):
                            if count:
                                bucket.inc(count)

    def _wake_writer(self) -> None:
        if not self._wake.is_set():
            self._wake.set()
        self._writer.ensure()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()


def _observe(sums: list[float], first: int, seconds: float) -> None:
    sums[first] += seconds
    sums[first + 1 + bisect.bisect_left(_SECONDS, seconds)] += 1


pending = _Pending()
atexit.register(pending.flush)
multiprocessing.util.Finalize(None, pending.flush, exitpriority=60)


def executed(label: tuple[str, str], *, requests: int, rows: int) -> None:
    """One session run of this (model name, version) that answered ``requests`` requests."""
    pending.executed(label, requests, rows)
    serving_stats.executed(label, requests=requests)


class InferenceMetrics:
    """What the predict service and the batching scheduler call: ``metrics.executed(...)``."""

    executed = staticmethod(executed)


metrics = InferenceMetrics()


def request_finished(context, status: int, *, duration_ms: float, retry_after: bool) -> None:
    """One answered predict or infer request (a core.request_log.RequestContext).

    A request that failed before its model was known (no key, an unknown model) is counted
    with empty model and version labels, and not in the per-minute statistics.
    """
    model = context.model
    label = (model.name, model.version) if model is not None else ("", "")
    outcome = outcome_of(status, cached=context.cached, retry_after=retry_after)
    compute = context.compute_ms
    pending.request(
        label,
        outcome,
        context.cached,
        duration_ms / 1000,
        None if compute is None else context.queue_ms / 1000,
        None if compute is None else compute / 1000,
    )
    if model is not None:
        serving_stats.request(label, status=status, cached=context.cached, duration_ms=duration_ms)


# The session pool of each process (inference.sessions `stats()`): set by the serving
# statistics writer every few seconds and by a scrape, summed over the live processes.
POOL_SESSIONS = Gauge("modelforge_session_pool_sessions", "ONNX Runtime sessions loaded.", multiprocess_mode="livesum")
POOL_BYTES = Gauge(
    "modelforge_session_pool_bytes", "Estimated memory of the loaded sessions (2 x file size).",
    multiprocess_mode="livesum",
)  # fmt: skip
# Each process's pool evicts past its own cap (SESSION_POOL_MAX_MEMORY_MB): summed over the same
# processes as the bytes, bytes / max is how full the pools are (the alert ModelPoolNearMemoryCap).
POOL_MAX_BYTES = Gauge(
    "modelforge_session_pool_max_bytes", "The session pools' memory cap (SESSION_POOL_MAX_MEMORY_MB).",
    multiprocess_mode="livesum",
)  # fmt: skip


def refresh_pool() -> None:
    from inference.sessions import get_pool

    stats = get_pool().stats()
    POOL_SESSIONS.set(stats["sessions"])
    POOL_BYTES.set(stats["estimated_bytes"])
    POOL_MAX_BYTES.set(stats["max_bytes"])


def _forget_process() -> None:
    """A process that ends takes its live gauges (the pool) with it; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())


def forget_dead_processes() -> list[int]:
    """Remove the live gauges of processes that ended without their finalizers (SIGKILL, an
    out-of-memory kill), so the pool gauges sum live processes only. Each server process does it
    once when it starts: a web worker granian starts in place of a killed one clears its
    predecessor's. Returns the pids forgotten."""
    from pathlib import Path

    from prometheus_client import multiprocess

    forgotten = []
    for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)) and int(pid) not in forgotten:
            multiprocess.mark_process_dead(int(pid))
            forgotten.append(int(pid))
    return forgotten


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


if MULTIPROCESS:
    atexit.register(_forget_process)
    multiprocessing.util.Finalize(None, _forget_process, exitpriority=50)
    forget_dead_processes()
