"""Per-minute serving statistics (inference.models.ServingMinute), recorded off the request path.

Each request adds to in-process counters keyed by model version and minute (a lock, a few
additions: no query); a background thread upserts them every SERVING_STATS_FLUSH_SECONDS
with ``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``, so every server process
adds to the same rows. As with the prediction history (inference.history), what is buffered
is written at interpreter exit and when a multiprocessing child (a granian worker) ends, and a
failed write keeps the counters for the next attempt.

The writer is a thread of its own rather than the history's: that one runs only while
predictions are sampled into the history (HISTORY_SAMPLE_RATE), these counts are always kept.
Rows are keyed here by (model name, version), the labels the batching scheduler knows; the
flush maps them to model ids with one query (versions deleted since are dropped).
``inferences`` and ``executions`` count every session run of the version in the process,
those of jobs run in it included (inference.metrics.executed).
"""

from __future__ import annotations

import atexit
import bisect
import logging
import multiprocessing.util
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.threads import Restartable
from inference.models import LATENCY_BOUNDS_MS, LATENCY_FIELDS, ServingMinute, ShadowMinute

logger = logging.getLogger(__name__)

_FINITE_BOUNDS = [bound for bound in LATENCY_BOUNDS_MS if bound is not None]
# Slots of one buffered row, in the order of the INSERT's columns after (model_id, minute).
_COUNTERS = (
    "requests", "errors", "client_errors", "server_errors", "cache_hits", "cache_misses", "inferences",
    "executions", "latency_sum_ms",
)  # fmt: skip
_COLUMNS = (*_COUNTERS, *LATENCY_FIELDS)
(_REQUESTS, _ERRORS, _CLIENT_ERRORS, _SERVER_ERRORS, _HITS, _MISSES, _INFERENCES, _EXECUTIONS, _LATENCY_SUM) = range(
    len(_COUNTERS)
)
_FIRST_BUCKET = len(_COUNTERS)
# Rows buffered at most (model versions x minutes) while the database cannot be written.
MAX_BUFFERED_ROWS = 100_000

Label = tuple[str, str]  # (model name, version)


class ServingStats:
    def __init__(self) -> None:
        self._rows: dict[tuple[Label, int], list[float]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._writer = Restartable(self._run, "serving-stats-writer")

    # --- the request side (microseconds, no I/O) -----------------------------------------
    def request(self, label: Label, *, status: int, cached: bool | None, duration_ms: float) -> None:
        """Count one answered request of this model version, ``duration_ms`` in the server.

        ``status``: the HTTP status answered (a gRPC door passes its HTTP equivalent); every
        status but a 2xx is an error, a 4xx a client error, a 5xx a server error.
        ``cached``: True a cache hit, False a miss, None the cache was not consulted.
        """
        bucket = _FIRST_BUCKET + bisect.bisect_left(_FINITE_BOUNDS, duration_ms)
        minute = int(time.time() // 60)
        with self._lock:
            row = self._row(label, minute)
            row[_REQUESTS] += 1
            if not 200 <= status < 300:
                row[_ERRORS] += 1
                if 400 <= status < 500:
                    row[_CLIENT_ERRORS] += 1
                elif status >= 500:
                    row[_SERVER_ERRORS] += 1
            if cached is True:
                row[_HITS] += 1
            elif cached is False:
                row[_MISSES] += 1
            row[_LATENCY_SUM] += duration_ms
            row[bucket] += 1
        self._ensure_thread()

    def executed(self, label: Label, *, requests: int) -> None:
        """One session run that answered ``requests`` requests (their ratio: the batch size)."""
        minute = int(time.time() // 60)
        with self._lock:
            row = self._row(label, minute)
            row[_INFERENCES] += requests
            row[_EXECUTIONS] += 1
        self._ensure_thread()

    def _row(self, label: Label, minute: int) -> list[float]:
        row = self._rows.get((label, minute))
        if row is None:
            if len(self._rows) >= MAX_BUFFERED_ROWS:
                self._rows.pop(next(iter(self._rows)))
                logger.error("serving statistics buffer full; the oldest minute of a model was dropped")
            row = self._rows[(label, minute)] = [0] * len(_COLUMNS)
            row[_LATENCY_SUM] = 0.0
        return row

    # --- the writer ------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def discard(self) -> None:
        """Drop everything buffered (tests, and nothing else, want this)."""
        with self._lock:
            self._rows.clear()

    def flush(self) -> int:
        """Add everything buffered to the database now; returns how many rows were upserted."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, {}
            if not rows:
                return 0
            try:
                written = _upsert(rows)
            except Exception:
                with self._lock:
                    for key, values in rows.items():
                        current = self._rows.get(key)
                        if current is None:
                            self._rows[key] = values
                        else:
                            for index, value in enumerate(values):
                                current[index] += value
                logger.exception("writing serving statistics failed; will retry")
                return 0
            return written

    def _ensure_thread(self) -> None:
        # Started again if it is gone (its loop survives any Exception of a flush; this covers
        # the rest), as the batching scheduler is.
        if settings.SERVING_STATS_FLUSH_SECONDS > 0:
            self._writer.ensure()

    def _run(self) -> None:
        while True:
            time.sleep(max(settings.SERVING_STATS_FLUSH_SECONDS, 0.1))
            try:
                close_old_connections()
                self.flush()
            except Exception:  # never let the writer die
                logger.exception("serving statistics writer error")


def _model_ids(labels: set[Label]) -> dict[Label, object]:
    """The id of each (name, version) that still exists: one query, whatever the count."""
    query = Q()
    for name, version in labels:
        query |= Q(name=name, version=version)
    from registry.models import MLModel

    rows = MLModel.objects.filter(query).values_list("pk", "name", "version")
    live = {(name, version): pk for pk, name, version in rows}
    dropped = labels - set(live)
    if dropped:
        logger.info("serving statistics of deleted models dropped", extra={"count": len(dropped)})
    return live


def _upsert(rows: dict[tuple[Label, int], list[float]]) -> int:
    ids = _model_ids({label for label, _minute in rows})
    params = []
    for (label, minute), values in rows.items():
        if label in ids:
            params.append([ids[label], datetime.fromtimestamp(minute * 60, UTC), *values])
    if not params:
        return 0
    # One order for every process: concurrent upserts lock rows in the same sequence, so two
    # writers cannot deadlock on each other's rows.
    params.sort(key=lambda row: (str(row[0]), row[1]))
    if connection.vendor == "sqlite":  # what Django's SQLite backend stores: uuid hex, naive UTC text
        for row in params:
            row[0] = row[0].hex
            row[1] = str(row[1].replace(tzinfo=None))
    quote = connection.ops.quote_name
    table = quote(ServingMinute._meta.db_table)
    columns = ["model_id", "minute", *_COLUMNS]
    column_list = ", ".join(map(quote, columns))
    placeholders = ", ".join(["%s"] * len(columns))
    increments = ", ".join(f"{quote(c)} = {table}.{quote(c)} + EXCLUDED.{quote(c)}" for c in _COLUMNS)
    # Names come from the model definition, values are parameters.
    sql = (
        f"INSERT INTO {table} ({column_list}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({quote('model_id')}, {quote('minute')}) DO UPDATE SET {increments}"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, params)
    return len(params)


serving_stats = ServingStats()
atexit.register(serving_stats.flush)
multiprocessing.util.Finalize(None, serving_stats.flush, exitpriority=100)


def serving_stats_cleanup(*, now: datetime | None = None) -> int:
    """Delete serving minutes (and shadow minutes, inference.shadow) older than
    SERVING_STATS_RETENTION_DAYS; returns the rows deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SERVING_STATS_RETENTION_DAYS)
    deleted, _ = ServingMinute.objects.older_than(cutoff).delete()
    shadowed, _ = ShadowMinute.objects.older_than(cutoff).delete()
    return deleted + shadowed
