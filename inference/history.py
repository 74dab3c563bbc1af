"""Prediction history, recorded without a database write on the request path.

Requests append a record to an in-process buffer; a background thread writes the buffer with
bulk inserts every HISTORY_FLUSH_INTERVAL_SECONDS (or sooner when HISTORY_BATCH_SIZE records
wait). The buffer is flushed at interpreter exit (gunicorn's graceful worker shutdown, Ctrl-C
on runserver), so a clean shutdown loses nothing. A failed write keeps the records for the
next attempt, up to HISTORY_BUFFER_MAX; only past that are the oldest dropped, and logged.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import multiprocessing.util
import random
import threading
from collections import deque
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.utils import timezone

from inference import history_partitions
from inference.models import Prediction

logger = logging.getLogger(__name__)


class HistoryBuffer:
    def __init__(self) -> None:
        self._records: deque[dict] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def should_record(self) -> bool:
        rate = settings.HISTORY_SAMPLE_RATE
        return rate >= 1 or (rate > 0 and random.random() < rate)

    def record(self, fields: dict) -> None:
        with self._lock:
            self._records.append(fields)
            overflow = len(self._records) - settings.HISTORY_BUFFER_MAX
            for _ in range(max(0, overflow)):
                self._records.popleft()
                self.dropped += 1
            size = len(self._records)
        if overflow > 0:
            logger.error("history buffer full, oldest records dropped", extra={"dropped": overflow})
        self._ensure_thread()
        if size >= settings.HISTORY_BATCH_SIZE:
            self._wake.set()

    def discard(self) -> int:
        """Drop everything buffered (tests, and nothing else, want this)."""
        with self._lock:
            count = len(self._records)
            self._records.clear()
        return count

    def pending(self) -> int:
        with self._lock:
            return len(self._records)

    def flush(self) -> int:
        """Write everything buffered now; returns how many rows were written."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = [self._records.popleft() for _ in range(min(len(self._records), 1000))]
                if not batch:
                    return written
                try:
                    _write(_without_orphans(batch))
                except Exception:
                    with self._lock:
                        self._records.extendleft(reversed(batch))
                    logger.exception("writing prediction history failed; will retry")
                    return written
                written += len(batch)

    def _ensure_thread(self) -> None:
        # Started again if it is gone (its loop survives any Exception of a flush; this covers
        # the rest), as the batching scheduler is.
        if (self._thread is not None and self._thread.is_alive()) or settings.HISTORY_FLUSH_INTERVAL_SECONDS <= 0:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.HISTORY_FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                close_old_connections()
                self.flush()
            except Exception:  # never let the writer die
                logger.exception("history writer error")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _column_writers() -> tuple[list[str], list[str], list]:
    """(columns, record keys, converters): records become rows without model instances.

    Building a model instance per row and letting the ORM encode it costs more than serving a
    small prediction; history must stay cheap next to the requests it records.
    """
    fields = Prediction._meta.concrete_fields
    vendor = connection.vendor

    def converter(field):
        if isinstance(field, models.JSONField):
            return lambda value: None if value is None else orjson.dumps(value).decode()
        if vendor == "sqlite":  # what Django's SQLite backend stores: uuid hex, naive UTC text
            uuid_like = isinstance(field, models.UUIDField) or (
                field.is_relation and isinstance(field.target_field, models.UUIDField)
            )
            if uuid_like:
                return lambda value: None if value is None else value.hex
            if isinstance(field, models.DateTimeField):
                return lambda value: str(value.astimezone(dt.UTC).replace(tzinfo=None))
        if vendor not in {"sqlite", "postgresql"}:
            return lambda value, field=field: field.get_db_prep_save(value, connection)
        return lambda value: value  # psycopg adapts uuid, datetime, bool and numbers itself

    return [f.column for f in fields], [f.attname for f in fields], [converter(f) for f in fields]


def _without_orphans(batch: list[dict]) -> list[dict]:
    """Drop records of models deleted since, and detach keys or users deleted since.

    Otherwise one such record would fail every bulk insert, and no history would be written again.
    """
    from django.contrib.auth import get_user_model

    from access.models import APIKey
    from registry.models import MLModel

    model_ids = {record["model_id"] for record in batch}
    live_models = set(MLModel.objects.filter(pk__in=model_ids).values_list("pk", flat=True))
    key_ids = {record.get("api_key_id") for record in batch} - {None}
    live_keys = set(APIKey.objects.filter(pk__in=key_ids).values_list("pk", flat=True)) if key_ids else set()
    user_ids = {record.get("user_id") for record in batch} - {None}
    live_users = (
        set(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True)) if user_ids else set()
    )
    kept = []
    for record in batch:
        if record["model_id"] not in live_models:
            continue
        if record.get("api_key_id") not in live_keys:
            record["api_key_id"] = None
        if record.get("user_id") not in live_users:
            record["user_id"] = None
        kept.append(record)
    if len(kept) < len(batch):
        logger.info("history of deleted models dropped", extra={"count": len(batch) - len(kept)})
    return kept


def _write(batch: list[dict]) -> None:
    if not batch:
        return
    columns, keys, converters = _column_writers()
    rows = [[convert(record.get(key)) for convert, key in zip(converters, keys, strict=True)] for record in batch]
    quote = connection.ops.quote_name
    table = quote(Prediction._meta.db_table)
    column_list = ", ".join(map(quote, columns))
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The rows formatted here in one string: psycopg's per-row dumping costs more.
            payload = "".join("\t".join(map(_copy_text, row)) + "\n" for row in rows)
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                copy.write(payload.encode())
        else:
            placeholders = ", ".join(["%s"] * len(columns))
            # Names come from the model definition, values are parameters.
            cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows)  # noqa: S608


history = HistoryBuffer()
# Flush at interpreter exit (runserver, gunicorn workers, Celery), and also when a
# multiprocessing child ends: those end with os._exit, which skips atexit but runs
# multiprocessing's own finalizers (granian's worker processes are such children).
atexit.register(history.flush)
multiprocessing.util.Finalize(None, history.flush, exitpriority=100)


def retention_cutoff(now: datetime) -> datetime:
    """The start of the UTC day HISTORY_RETENTION_DAYS before ``now``: history is removed a whole
    day at a time, so that on PostgreSQL a day's partition is dropped rather than its rows deleted
    hour by hour. A row is kept at least HISTORY_RETENTION_DAYS, at most one day more."""
    day = (now - timedelta(days=settings.HISTORY_RETENTION_DAYS)).astimezone(dt.UTC).date()
    return datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def history_cleanup(*, now: datetime | None = None) -> int:
    """Remove history older than the retention (``retention_cutoff``); returns the rows removed.

    On PostgreSQL, where the table is partitioned by day (inference.history_partitions), this
    also makes the partitions of the days ahead, and removes old days by dropping their
    partitions. Elsewhere (SQLite) it deletes the rows.
    """
    now = now or timezone.now()
    cutoff = retention_cutoff(now)
    if history_partitions.is_partitioned():
        history_partitions.partitions_create(now=now)
        return history_partitions.partitions_remove_before(cutoff)
    deleted, _ = Prediction.objects.older_than(cutoff).delete()
    return deleted
