"""Shadow traffic: a copy of an alias's requests run by another version, compared, never answered.

The exchange calls `offer` once the client's reply is made (inference.exchange). A copy is
taken for `plan.shadow_fraction` of the requests and put on a bounded queue; when the queue is
full the copy is dropped and counted, so the client never waits for a shadow. SHADOW_THREADS
threads of the process take copies off the queue, decode the body for the shadow version (its
own schema), run it through the same session pool under SHADOW_TIMEOUT_SECONDS, and compare
its outputs with the primary's.

A shadow runs on the process's idle time only: a copy starts when no client request is being
answered in this process and none started in the last SHADOW_IDLE_MS (the exchange marks each
request's start and end: `client_started`, `client_finished`). Threads of one process share
its interpreter lock and its cores, so a shadow run beside a client's would slow the client;
waiting for a gap keeps the client's latency its own. A copy that finds no gap within
SHADOW_MAX_WAIT_SECONDS is dropped and counted (with every queued copy as old, in one go): a
busy process compares a sample of its traffic, an idle one all of it, and the dropped count
says which (GET .../rollout, /metrics). Nothing a shadow does reaches the client: its errors (it
raises, it times out, it was archived) are counted, never raised; it writes no history and no
serving statistics of requests (its session runs count as executions, which they are).

Comparison, per copy, over the outputs both answered, as JSON renders them (so a label is a
label and a probability map a map whatever the version's raw types): a numeric tensor agrees
when every element is within ``atol + rtol * |primary|`` (AGREE_ATOL, AGREE_RTOL) and adds its
largest absolute and relative difference to the minute's maxima; anything else (labels,
strings, maps) agrees when equal. A copy agrees when every output does.

Per minute and (primary, shadow) pair the counts go to inference.models.ShadowMinute (upserted
by a writer thread every SERVING_STATS_FLUSH_SECONDS, as inference.serving_stats does) and to
``modelforge_shadow_copies_total{model,version,outcome}`` (agreed, disagreed, error, dropped).
"""

from __future__ import annotations

import atexit
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from prometheus_client import Counter

from core.threads import Restartable
from inference import deadlines, services
from inference.errors import ModelNotReady
from inference.models import ShadowMinute
from inference.routing import Plan, rng
from inference.tensors import encode_outputs
from registry.models import MLModel

logger = logging.getLogger(__name__)

AGREE_ATOL = 1e-6
AGREE_RTOL = 1e-5
SHADOW_COPIES = Counter(
    "modelforge_shadow_copies",
    "Copies of an alias's requests run by its shadow version, by outcome: agreed or disagreed with the "
    "primary, error (the shadow failed), dropped (no idle time for it within SHADOW_MAX_WAIT_SECONDS, or the "
    "shadow queue was full).",
    ["model", "version", "outcome"],
)

_COLUMNS = (
    "copies", "dropped", "errors", "compared", "agreements", "max_abs_diff", "max_rel_diff",
    "primary_latency_sum_ms", "shadow_latency_sum_ms",
)  # fmt: skip
_MAXED = {"max_abs_diff", "max_rel_diff"}
COPIES, DROPPED, ERRORS, COMPARED, AGREEMENTS, MAX_ABS, MAX_REL, PRIMARY_MS, SHADOW_MS = range(len(_COLUMNS))


@dataclass(frozen=True, slots=True)
class Comparison:
    agree: bool
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0


def compare(primary: Mapping[str, Any], shadow: Mapping[str, Any]) -> Comparison:
    """The primary's and the shadow's JSON-rendered outputs, compared (see the module docstring)."""
    agree = True
    max_abs = max_rel = 0.0
    for name in primary.keys() & shadow.keys():
        a, b = primary[name], shadow[name]
        try:
            left, right = np.asarray(a), np.asarray(b)
        except ValueError:  # ragged: compared as data
            agree = agree and a == b
            continue
        numeric = left.dtype.kind in "fiu" and right.dtype.kind in "fiu"
        if not numeric or left.dtype.kind != "f" and right.dtype.kind != "f":
            agree = agree and left.shape == right.shape and bool(np.array_equal(left, right))
            continue
        if left.shape != right.shape:
            agree = False
            continue
        left, right = left.astype(np.float64), right.astype(np.float64)
        difference = np.abs(left - right)
        finite = np.isfinite(difference)
        if difference.size and finite.any():
            max_abs = max(max_abs, float(difference[finite].max()))
            scale = np.maximum(np.abs(left), np.abs(right))[finite]
            relative = np.divide(difference[finite], scale, out=np.zeros_like(scale), where=scale > 0)
            max_rel = max(max_rel, float(relative.max()))
        agree = agree and bool(np.allclose(right, left, rtol=AGREE_RTOL, atol=AGREE_ATOL, equal_nan=True))
    return Comparison(agree, max_abs, max_rel)


class ShadowStats:
    """Per-minute counters by (primary id, shadow id), upserted by a writer thread."""

    def __init__(self) -> None:
        self._rows: dict[tuple[Any, Any, int], list[float]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._writer = Restartable(self._run, "shadow-stats-writer")

    def add(self, primary: MLModel, shadow: MLModel, **values: float) -> None:
        minute = int(time.time() // 60)
        with self._lock:
            row = self._rows.get((primary.pk, shadow.pk, minute))
            if row is None:
                row = self._rows[(primary.pk, shadow.pk, minute)] = [0.0] * len(_COLUMNS)
            for field, value in values.items():
                index = _COLUMNS.index(field)
                row[index] = max(row[index], value) if field in _MAXED else row[index] + value
        self._ensure_thread()

    def discard(self) -> None:
        with self._lock:
            self._rows.clear()

    def flush(self) -> int:
        """Add everything counted to the database now; returns the rows upserted."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, {}
            if not rows:
                return 0
            try:
                return _upsert(rows)
            except Exception:
                logger.exception("writing shadow statistics failed; this interval's counts are lost")
                return 0

    def _ensure_thread(self) -> None:
        if settings.SERVING_STATS_FLUSH_SECONDS > 0:
            self._writer.ensure()

    def _run(self) -> None:
        while True:
            time.sleep(max(settings.SERVING_STATS_FLUSH_SECONDS, 0.1))
            try:
                close_old_connections()
                self.flush()
            except Exception:  # never let the writer die
                logger.exception("shadow statistics writer error")


def _upsert(rows: dict[tuple[Any, Any, int], list[float]]) -> int:
    from registry.models import MLModel as Model

    live = set(
        Model.objects.filter(pk__in={key[0] for key in rows} | {key[1] for key in rows}).values_list("pk", flat=True)
    )
    params = [
        [primary, shadow, datetime.fromtimestamp(minute * 60, UTC), *values]
        for (primary, shadow, minute), values in sorted(
            rows.items(), key=lambda item: (str(item[0][0]), str(item[0][1]), item[0][2])
        )
        if primary in live and shadow in live
    ]
    if not params:
        return 0
    greatest = "GREATEST"
    if connection.vendor == "sqlite":  # what Django's SQLite backend stores (as serving_stats does)
        greatest = "MAX"
        for row in params:
            row[0], row[1], row[2] = row[0].hex, row[1].hex, str(row[2].replace(tzinfo=None))
    quote = connection.ops.quote_name
    table = quote(ShadowMinute._meta.db_table)
    columns = ["primary_id", "shadow_id", "minute", *_COLUMNS]
    updates = ", ".join(
        f"{quote(c)} = {greatest}({table}.{quote(c)}, EXCLUDED.{quote(c)})"
        if c in _MAXED
        else f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}"
        for c in _COLUMNS
    )
    # Names come from the model definition, values are parameters.
    sql = (
        f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES ({', '.join(['%s'] * len(columns))}) "  # noqa: S608
        f"ON CONFLICT ({quote('primary_id')}, {quote('shadow_id')}, {quote('minute')}) DO UPDATE SET {updates}"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)
    return len(params)


@dataclass(slots=True)
class _Copy:
    plan: Plan
    primary: MLModel  # the version that answered the client (the alias's, or its candidate)
    protocol: Any
    body: bytes
    incoming: Any
    outcome: Any
    served_ms: float
    taken_at: float = field(default_factory=time.monotonic)


# The client requests this process is answering now (one item each: deque's append and pop are
# atomic, so every door's threads may mark theirs without a lock), and when the latest started.
_answering: deque = deque()
_latest_start = [0.0]

# How often a waiting copy looks again while clients are answered. Each look takes the
# interpreter lock from a client's thread for a moment: rarely, so that it costs them nothing.
_BUSY_POLL_SECONDS = 0.01


def client_started() -> None:
    _answering.append(None)
    _latest_start[0] = time.monotonic()


def client_finished() -> None:
    _answering.pop()


def _wait_for_idle(copy: _Copy) -> bool:
    """Wait until no client is being answered and none started for SHADOW_IDLE_MS; False when
    SHADOW_MAX_WAIT_SECONDS passed first (the copy is then dropped)."""
    idle = settings.SHADOW_IDLE_MS / 1000
    deadline = copy.taken_at + settings.SHADOW_MAX_WAIT_SECONDS
    while True:
        now = time.monotonic()
        quiet_for = now - _latest_start[0]
        if not _answering and quiet_for >= idle:
            return True
        if now >= deadline:
            return False
        time.sleep(max(idle - quiet_for, 0.0) if not _answering else _BUSY_POLL_SECONDS)


class ShadowRunner:
    def __init__(self) -> None:
        self._queue: queue.Queue[_Copy] | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def offer(self, plan: Plan, protocol, body: bytes, incoming, outcome, *, served_ms: float) -> None:
        """Take a copy of this answered request for the plan's shadow, for its share of requests.
        Never raises and never blocks: a full queue drops the copy (counted)."""
        try:
            if plan.shadow_fraction < 1.0 and rng.random() >= plan.shadow_fraction:
                return
            copy = _Copy(plan, outcome.model, protocol, body, incoming, outcome, served_ms)
            self._ensure_threads()
            if len(self._queue.queue) >= self._queue.maxsize:
                # Full (a busy process: copies wait for its idle time): dropped without taking the
                # queue's lock or raising, which the clients' threads would pay for.
                self._count(copy, "dropped", copies=1, dropped=1)
                return
            try:
                self._queue.put_nowait(copy)
            except queue.Full:
                self._count(copy, "dropped", copies=1, dropped=1)
        except Exception:
            logger.exception("shadow copy not taken")

    def join(self) -> None:
        """Wait until every copy taken has been run (tests, the bench)."""
        if self._queue is not None:
            self._queue.join()

    def _ensure_threads(self) -> None:
        if self._queue is not None and all(thread.is_alive() for thread in self._threads):
            return
        with self._lock:
            if self._queue is None:
                self._queue = queue.Queue(maxsize=settings.SHADOW_QUEUE_SIZE)
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            while len(self._threads) < settings.SHADOW_THREADS:
                thread = threading.Thread(target=self._run, name=f"shadow-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _run(self) -> None:
        waiting: _Copy | None = None  # taken off the queue by the previous round
        while True:
            copy, waiting = waiting or self._queue.get(), None
            try:
                if _wait_for_idle(copy):
                    self._shadow(copy)
                else:
                    self._count(copy, "dropped", copies=1, dropped=1)
                    waiting = self._drop_stale()
            except Exception:  # never let a shadow thread die
                logger.exception("shadow run failed")
            finally:
                self._queue.task_done()

    def _drop_stale(self) -> _Copy | None:
        """Drop, in one go, the queued copies that waited as long as the one just dropped (a
        busy process: the queue is oldest first); returns the first that may still wait."""
        max_wait = settings.SHADOW_MAX_WAIT_SECONDS
        while True:
            try:
                copy = self._queue.get_nowait()
            except queue.Empty:
                return None
            if time.monotonic() - copy.taken_at < max_wait:
                return copy
            self._count(copy, "dropped", copies=1, dropped=1)
            self._queue.task_done()

    def _shadow(self, copy: _Copy) -> None:
        shadow = copy.plan.shadow
        started = time.perf_counter()
        try:
            if shadow.status != MLModel.Status.READY:
                raise ModelNotReady(f"{shadow} is {shadow.status}")
            decoded = copy.protocol.decode(shadow, copy.body, copy.incoming)
            with deadlines.caller_deadline(settings.SHADOW_TIMEOUT_SECONDS):
                names, values, _queue_ms, _compute_ms = services.run_model(shadow, decoded.feeds)
            shadow_ms = (time.perf_counter() - started) * 1000
            rendered, _warnings = encode_outputs(names, values, shadow.output_schema)
            found = compare(copy.outcome.output_data, rendered)
        except Exception as exc:
            logger.info("shadow version failed: %s", str(exc)[:300], extra={"shadow": str(shadow)})
            self._count(copy, "error", copies=1, errors=1)
            return
        finally:
            # The session pool's stale sweep may have queried from this thread, rarely: a copy
            # leaves no connection open behind it.
            connection.close()
        self._count(
            copy,
            "agreed" if found.agree else "disagreed",
            copies=1,
            compared=1,
            agreements=1 if found.agree else 0,
            max_abs_diff=found.max_abs_diff,
            max_rel_diff=found.max_rel_diff if math.isfinite(found.max_rel_diff) else 0.0,
            primary_latency_sum_ms=copy.served_ms,
            shadow_latency_sum_ms=shadow_ms,
        )

    @staticmethod
    def _count(copy: _Copy, outcome: str, **values: float) -> None:
        shadow = copy.plan.shadow
        SHADOW_COPIES.labels(shadow.name, shadow.version, outcome).inc()
        shadow_stats.add(copy.primary, shadow, **values)


shadow_stats = ShadowStats()
shadow_runner = ShadowRunner()
offer = shadow_runner.offer
atexit.register(shadow_stats.flush)
