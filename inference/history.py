"""Prediction history, recorded without a database write on the request path.

Requests append a record (a `HistoryRecord`: a tuple of the row's values) to an in-process
buffer; a background thread writes the buffer every HISTORY_FLUSH_INTERVAL_SECONDS (or sooner
when HISTORY_BATCH_SIZE records wait): on PostgreSQL one COPY per 1,000 rows, whose text is made
in one loop written for the Prediction columns (`copy_text`), elsewhere (SQLite in development)
a bulk INSERT. Recording is cheap on purpose: the request builds one tuple, and the writer's
formatting, which holds the GIL the request threads wait for, costs a few microseconds a row.

The buffer is flushed at interpreter exit (granian's and gunicorn's graceful worker shutdown,
Ctrl-C on runserver), so a clean shutdown loses nothing. A crash (a killed process, a lost
machine) loses what is buffered: at most HISTORY_BUFFER_MAX rows, normally about
HISTORY_FLUSH_INTERVAL_SECONDS of traffic. A failed write keeps the records for the next
attempt, up to HISTORY_BUFFER_MAX; only past that are the oldest dropped, and logged. Records of
models deleted before their write are dropped, and keys or users deleted since are detached
(`_without_orphans`), so that one such record cannot fail every write after it.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import logging
import multiprocessing.util
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, models, transaction
from django.utils import timezone

from core.threads import Restartable
from inference import history_partitions
from inference.models import Prediction

logger = logging.getLogger(__name__)


class HistoryRecord(NamedTuple):
    """One prediction to record: the values of Prediction's columns, by field attname.

    A tuple rather than a dict or a model instance: it is made on every request, and the writer
    reads it by position.
    """

    id: uuid.UUID
    model_id: uuid.UUID
    model_name: str
    model_version: str
    api_key_id: str | None
    user_id: int | None
    input_data: Any
    input_truncated: bool
    output_data: Any
    warnings: list[str]
    cached: bool
    inference_time_ms: float
    total_time_ms: float
    created_at: datetime


class HistoryBuffer:
    def __init__(self) -> None:
        self._records: deque[HistoryRecord] = deque()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer = Restartable(self._run, "history-writer")
        self.dropped = 0

    def should_record(self) -> bool:
        rate = settings.HISTORY_SAMPLE_RATE
        return rate >= 1 or (rate > 0 and random.random() < rate)

    def record(self, record: HistoryRecord) -> None:
        with self._lock:
            self._records.append(record)
            size = len(self._records)
            overflow = size - settings.HISTORY_BUFFER_MAX
            if overflow > 0:
                for _ in range(overflow):
                    self._records.popleft()
                self.dropped += overflow
                size -= overflow
        if overflow > 0:
            logger.error("history buffer full, oldest records dropped", extra={"dropped": overflow})
        self._ensure_thread()
        # Once: setting the event again costs every request a lock until the writer has woken.
        if size >= settings.HISTORY_BATCH_SIZE and not self._wake.is_set():
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
        """Write everything buffered now; returns how many rows were written.

        What is buffered when it starts, not what arrives meanwhile: chasing those would write
        them a few rows at a time (each write has its fixed cost: the orphan check's queries, a
        transaction, a COPY), which under load cost more than the rows themselves. They wait
        for the next flush, at most HISTORY_FLUSH_INTERVAL_SECONDS.
        """
        written = 0
        with self._flush_lock:
            with self._lock:
                left = len(self._records)
            while left > 0:
                with self._lock:
                    batch = [self._records.popleft() for _ in range(min(len(self._records), left, 1000))]
                if not batch:
                    return written
                left -= len(batch)
                try:
                    _write(_without_orphans(batch))
                except Exception:
                    with self._lock:
                        self._records.extendleft(reversed(batch))
                    logger.exception("writing prediction history failed; will retry")
                    return written
                written += len(batch)
        return written

    def _ensure_thread(self) -> None:
        # Started again if it is gone (its loop survives any Exception of a flush; this covers
        # the rest), as the batching scheduler is.
        if settings.HISTORY_FLUSH_INTERVAL_SECONDS > 0:
            self._writer.ensure()

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.HISTORY_FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                close_old_connections()
                self.flush()
            except Exception:  # never let the writer die
                logger.exception("history writer error")


def _without_orphans(batch: list[HistoryRecord]) -> list[HistoryRecord]:
    """Drop records of models deleted since, and detach keys or users deleted since.

    Otherwise one such record would fail every bulk insert, and no history would be written again.
    """
    from django.contrib.auth import get_user_model

    from access.models import APIKey
    from registry.models import MLModel

    model_ids = {record.model_id for record in batch}
    live_models = set(MLModel.objects.filter(pk__in=model_ids).values_list("pk", flat=True))
    key_ids = {record.api_key_id for record in batch} - {None}
    live_keys = set(APIKey.objects.filter(pk__in=key_ids).values_list("pk", flat=True)) if key_ids else set()
    user_ids = {record.user_id for record in batch} - {None}
    live_users = (
        set(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", flat=True)) if user_ids else set()
    )
    kept = []
    for record in batch:
        if record.model_id not in live_models:
            continue
        if record.api_key_id is not None and record.api_key_id not in live_keys:
            record = record._replace(api_key_id=None)
        if record.user_id is not None and record.user_id not in live_users:
            record = record._replace(user_id=None)
        kept.append(record)
    if len(kept) < len(batch):
        logger.info("history of deleted models dropped", extra={"count": len(batch) - len(kept)})
    return kept


def _write(batch: list[HistoryRecord]) -> None:
    if not batch:
        return
    quote = connection.ops.quote_name
    table = quote(Prediction._meta.db_table)
    column_list = ", ".join(quote(Prediction._meta.get_field(name).column) for name in HistoryRecord._fields)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
                copy.write(copy_text(batch))
        else:
            placeholders = ", ".join(["%s"] * len(HistoryRecord._fields))
            rows = [[convert(value) for convert, value in zip(_converters(), record, strict=True)] for record in batch]
            # Names come from the model definition, values are parameters.
            cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({placeholders})", rows)  # noqa: S608


_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    """A text value in COPY's text format: backslash, tab, newline and carriage return escaped."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _json(value: Any) -> str:
    """A JSON column's value in COPY's text format. orjson escapes every control character
    (a tab in a string is written as the two characters \\t), so only its backslashes need doubling.

    PostgreSQL's jsonb cannot hold the character U+0000 (a string input may carry it): it is
    recorded as U+FFFD, the replacement character, rather than fail the write of the whole batch.
    """
    if value is None:
        return _NULL
    if value == []:  # the warnings of almost every prediction
        return "[]"
    data = orjson.dumps(value)
    if b"\\" in data:
        if b"\\u0000" in data:
            data = orjson.dumps(_without_nul(value))
        data = data.replace(b"\\", b"\\\\")
    return data.decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def copy_text(batch: list[HistoryRecord]) -> bytes:
    """The records as the data of one COPY ... FROM STDIN (text format) into HistoryRecord's columns.

    One loop written for these columns: building each value through a generic converter cost
    more than the rest of recording a prediction, in the writer thread that holds the GIL the
    request threads wait for. Ids are written as 32 hex digits (PostgreSQL reads a uuid with or
    without hyphens), floats as their repr, datetimes in ISO 8601 with their offset.
    """
    null = _NULL
    lines = []
    append = lines.append
    for (
        pk,
        model_id,
        model_name,
        model_version,
        api_key_id,
        user_id,
        input_data,
        input_truncated,
        output_data,
        warnings,
        cached,
        inference_time_ms,
        total_time_ms,
        created_at,
    ) in batch:
        append(
            f"{pk.hex}\t{model_id.hex}\t{_text(model_name)}\t{_text(model_version)}\t"
            f"{null if api_key_id is None else _text(api_key_id)}\t{null if user_id is None else user_id}\t"
            f"{_json(input_data)}\t{'t' if input_truncated else 'f'}\t{_json(output_data)}\t{_json(warnings)}\t"
            f"{'t' if cached else 'f'}\t{inference_time_ms!r}\t{total_time_ms!r}\t{created_at.isoformat()}\n"
        )
    return "".join(lines).encode()


@functools.cache
def _converters_for(vendor: str) -> tuple[Callable[[Any], Any], ...]:
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
            return lambda value: value
        return lambda value: field.get_db_prep_save(value, connection)

    return tuple(converter(Prediction._meta.get_field(name)) for name in HistoryRecord._fields)


def _converters() -> tuple[Callable[[Any], Any], ...]:
    """Per column, a record's value as the database wants it as a parameter, on databases other
    than PostgreSQL (SQLite in development): without model instances, which cost more to build."""
    return _converters_for(connection.vendor)


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
