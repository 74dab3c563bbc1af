"""Dynamic batching: concurrent requests for one model merged into one session.run.

For a model with batching enabled, request threads put their validated feeds on the model's
queue and wait; one scheduler thread per model takes the first request, gathers more until
`max_batch_size` rows, `preferred_batch_size` rows or `max_queue_delay_microseconds` (whichever
comes first), concatenates compatible requests along the first dimension, runs once and splits
the outputs back by each request's row count (Triton's vocabulary and behaviour).

Correctness comes first:
- only models whose every input has a variable first dimension are batched, and only requests
  whose inputs agree on dtype and on every other dimension go in one run;
- if a merged run fails, or an output's first dimension is not the total row count (a model
  that reduces over the batch), the requests are run one by one, so each gets exactly the
  result it would have had alone and a failing request fails alone;
- a full queue (`max_queue_size` requests) rejects at once with 503 and Retry-After; a request
  that waits longer than `default_timeout_microseconds` is answered 503 too.

Merged results equal the unbatched ones up to floating-point rounding: ONNX Runtime chooses its
matrix kernels by row count, so a row run alone may differ from the same row in a larger run in
the last bits (docs/architecture.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.exceptions import DomainError
from inference.deadlines import InferenceTimeout
from inference.errors import InferenceFailed, QueueFull, QueueTimeout
from inference.metrics import metrics

logger = logging.getLogger(__name__)

IDLE_EXIT_SECONDS = 60.0


@dataclass
class BatchConfig:
    max_batch_size: int
    max_queue_delay_us: int
    preferred_batch_size: int | None
    max_queue_size: int
    timeout_us: int


class _Done:
    """Set once by the scheduler, waited on by the request's thread: one lock, held until set
    (a threading.Event builds a Condition and a waiter lock per wait; this is on every request)."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """True once set; False when ``timeout`` seconds passed first."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
            return True
        return self._set


@dataclass(slots=True, eq=False)  # compared by identity: its feeds are arrays (queue.remove)
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    signature: tuple
    enqueued: float
    deadline: float | None
    done: _Done = field(default_factory=_Done)
    values: list[Any] | None = None
    error: BaseException | None = None
    queue_ms: float = 0.0
    compute_ms: float = 0.0


def batchable_schema(input_schema: list[dict]) -> bool:
    """Every input is a tensor whose first dimension is variable."""
    return bool(input_schema) and all(
        entry.get("kind") == "tensor" and entry.get("shape") and entry["shape"][0] == -1 for entry in input_schema
    )


def _signature(feeds: dict[str, np.ndarray]) -> tuple:
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items()))


class ModelBatcher:
    """The queue and scheduler thread of one model (one file, one set of batching settings)."""

    def __init__(self, *, key: str, session_provider, model_label: tuple[str, str], config: BatchConfig):
        self.key = key
        self.session_provider = session_provider  # () -> LoadedSession; re-read on every run
        self.model_label = model_label
        self.config = config
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        # While the scheduler waits for a batch to fill: the rows it still wants. Requests that
        # leave it short do not wake it (one thread switch per request saved); it looks again at
        # the delay's end, or as soon as the queue holds what it wants.
        self._wanted_rows: int | None = None
        self._thread: threading.Thread | None = None
        self.busy = False  # the scheduler is running a batch
        # Cleared for good once a merged run's outputs do not line up with its rows (the model
        # mixes rows, e.g. reduces over the batch): merging it again would only cost a run.
        self.mergeable = True

    def waiting(self) -> int:
        """Requests queued and not yet taken into a batch."""
        with self._cond:
            return len(self._queue)

    # --- request side --------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[Any], float, float]:
        """Run these feeds within a batch; returns (values, queue ms, compute ms)."""
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        now = time.perf_counter()
        timeout = self.config.timeout_us / 1e6 if self.config.timeout_us else None
        pending = _Pending(feeds, rows, _signature(feeds), now, now + timeout if timeout else None)
        with self._cond:
            if len(self._queue) >= self.config.max_queue_size:
                raise QueueFull(
                    f"The queue of {self.model_label[0]} {self.model_label[1]} is full "
                    f"({self.config.max_queue_size} requests waiting). Retry shortly.",
                    retry_after=1,
                )
            self._queue.append(pending)
            self._ensure_thread()
            # The scheduler took everything queued before it waited: the queue holds only arrivals since.
            if self._wanted_rows is None or sum(p.rows for p in self._queue) >= self._wanted_rows:
                self._cond.notify()
        # A request never waits forever, even if the scheduler died: the timeout, or a generous cap.
        if not pending.done.wait(timeout if timeout else 300):
            with self._cond:
                if pending in self._queue:
                    self._queue.remove(pending)
            raise QueueTimeout(
                "The request waited longer than the model's timeout in its batching queue. Retry shortly.",
                retry_after=1,
            )
        if pending.error is not None:
            raise pending.error
        return pending.values, pending.queue_ms, pending.compute_ms

    # --- scheduler side ------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.key[:12]}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self.busy = True
            try:
                self._execute(batch)
            except BaseException as exc:  # never leave a request waiting
                logger.exception("batch execution failed")
                for pending in batch:
                    if not pending.done.is_set():
                        pending.error = InferenceFailed(f"The model could not run: {str(exc)[:300]}")
                        pending.done.set()
            finally:
                self.busy = False

    def _gather(self) -> list[_Pending] | None:
        config = self.config
        with self._cond:
            while not self._queue:
                if not self._cond.wait(IDLE_EXIT_SECONDS) and not self._queue:
                    self._thread = None
                    return None  # idle: the next request starts a new scheduler
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            target = min(config.preferred_batch_size or config.max_batch_size, config.max_batch_size)
            deadline = first.enqueued + config.max_queue_delay_us / 1e6
            while rows < target:
                if self._queue:
                    candidate = self._queue[0]
                    if rows + candidate.rows > config.max_batch_size:
                        break
                    batch.append(self._queue.popleft())
                    rows += candidate.rows
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wanted_rows = target - rows
                try:
                    self._cond.wait(remaining)
                finally:
                    self._wanted_rows = None
        return batch

    def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        live = []
        for pending in batch:
            pending.queue_ms = (started - pending.enqueued) * 1000
            if pending.deadline is not None and started > pending.deadline:
                pending.error = QueueTimeout(
                    "The request waited longer than the model's timeout in its batching queue. Retry shortly.",
                    retry_after=1,
                )
                pending.done.set()
            else:
                live.append(pending)
        groups: dict[tuple, list[_Pending]] = {}
        for pending in live:
            groups.setdefault(pending.signature, []).append(pending)
        for group in groups.values():
            self._run_group(group)

    def _run_group(self, group: list[_Pending]) -> None:
        loaded = self.session_provider()
        if len(group) > 1 and self.mergeable:
            names = list(group[0].feeds)
            merged = {name: np.concatenate([p.feeds[name] for p in group], axis=0) for name in names}
            total = sum(p.rows for p in group)
            started = time.perf_counter()
            try:
                values = loaded.run(merged, label=self.key)
            except InferenceTimeout as exc:
                for pending in group:  # run alone, each would take as long again
                    pending.error = exc
                    pending.done.set()
                return
            except Exception:
                values = None  # one bad request must not fail the others: run them alone below
            compute_ms = (time.perf_counter() - started) * 1000
            aligned = values is not None and all(
                isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == total for v in values
            )
            if values is not None and not aligned:
                self.mergeable = False
                logger.warning("outputs not aligned with rows; not merging this model", extra={"model": self.key})
            if aligned:
                metrics.executed(self.model_label, requests=len(group), rows=total)
                offset = 0
                for pending in group:
                    pending.values = [v[offset : offset + pending.rows] for v in values]
                    pending.compute_ms = compute_ms
                    offset += pending.rows
                    pending.done.set()
                return
        for pending in group:
            started = time.perf_counter()
            try:
                pending.values = loaded.run(pending.feeds, label=self.key)
                metrics.executed(self.model_label, requests=1, rows=pending.rows)
            except DomainError as exc:  # its deadline, or its memory limit (an isolated model)
                pending.error = exc
            except Exception as exc:
                pending.error = InferenceFailed(f"The model could not run on these inputs: {str(exc)[:500]}")
            pending.compute_ms = (time.perf_counter() - started) * 1000
            pending.done.set()


class Batchers:
    """One ModelBatcher per model file and batching settings, created on first use."""

    def __init__(self) -> None:
        self._batchers: dict[tuple, ModelBatcher] = {}
        self._lock = threading.Lock()

    def for_model(self, model, session_provider) -> ModelBatcher:
        config = BatchConfig(
            max_batch_size=max(1, model.max_batch_size),
            max_queue_delay_us=max(0, model.max_queue_delay_microseconds),
            preferred_batch_size=model.preferred_batch_size or None,
            max_queue_size=max(1, model.max_queue_size),
            timeout_us=max(0, model.default_timeout_microseconds),
        )
        key = (model.file_sha256, model.pk)
        batcher = self._batchers.get(key)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(key)
                if batcher is None:
                    batcher = ModelBatcher(
                        key=model.file_sha256,
                        session_provider=session_provider,
                        model_label=(model.name, model.version),
                        config=config,
                    )
                    self._batchers[key] = batcher
        batcher.config = config  # settings edited in the registry apply to the next batch
        batcher.session_provider = session_provider
        return batcher

    def clear(self) -> None:
        with self._lock:
            self._batchers.clear()


batchers = Batchers()
