"""Prediction history in day partitions, on PostgreSQL.

At a few thousand predictions per second the history grows by hundreds of millions of rows a
day, and removing a day of it with DELETE (every row marked dead and written to the WAL, then
vacuumed out of the heap and every index, its space kept by the table) becomes the database's
heaviest work. On PostgreSQL the table is therefore partitioned by range of ``created_at``
(migration ``inference.0005_history_partitions``), and retention detaches and drops a whole
day's partition: catalog changes and a file unlink, whatever its size.

- ``<table>_pYYYYMMDD`` holds one UTC day, [00:00, next 00:00). ``<table>_default`` takes every
  row no day partition covers (a client clock far off, or days past those created if the
  periodic task stopped running), so recording never fails for want of a partition.
- ``partitions_create`` makes the partitions of today and the next ``DAYS_AHEAD`` days. The
  hourly cleanup calls it (and the migration made the first ones), so a week without the
  periodic task still writes into day partitions. Rows that waited in the default partition for
  a day are moved into that day's partition when it is made.
- ``partitions_remove_before`` detaches and drops every day partition entirely older than the
  cutoff, then deletes the older rows of the default partition (and of a partition straddling
  the cutoff, which the day-aligned cutoff of ``inference.history`` never leaves).

Detaching a partition takes an ACCESS EXCLUSIVE lock on the whole table (DETACH CONCURRENTLY is
not allowed while a default partition exists), and attaching one takes it on the default
partition: reads of the history would queue behind a statement waiting for either. Each runs
under ``LOCK_TIMEOUT`` and gives up (logged) rather than stall them; the next run tries again,
and what was not dropped is not deleted row by row meanwhile.

Nothing here runs on SQLite (the embedded setup) or on a table left unpartitioned: there the
table is a plain one and retention is a DELETE (``inference.history.history_cleanup``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import DatabaseError, connection, transaction

from inference.models import Prediction

logger = logging.getLogger(__name__)

DAYS_AHEAD = 7
LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime | None  # None, None: the default partition
    end: datetime | None

    @property
    def is_default(self) -> bool:
        return self.start is None


def _table() -> str:
    return Prediction._meta.db_table


def partition_name(day: date) -> str:
    return f"{_table()}_p{day:%Y%m%d}"


def default_partition_name() -> str:
    return f"{_table()}_default"


def _literal(moment: datetime) -> str:
    """A timestamptz literal (bounds are computed here, never taken from input)."""
    return f"'{moment.astimezone(UTC).isoformat()}'::timestamptz"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def is_partitioned() -> bool:
    """Whether the history table is a partitioned one (PostgreSQL after the migration)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [_table()])
        row = cursor.fetchone()
    return bool(row and row[0])


def partitions() -> list[Partition]:
    """The table's partitions with their bounds, oldest first, the default partition last."""
    with connection.cursor() as cursor:
        # The bounds as PostgreSQL prints them, read back as timestamptz by PostgreSQL itself.
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
                   bounds[1]::timestamptz, bounds[2]::timestamptz
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid,
            regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS bounds
            WHERE i.inhparent = to_regclass(%s)
            """,
            [_table()],
        )
        rows = cursor.fetchall()
    # A partition bounded by MINVALUE or MAXVALUE (never made here) has no dates: left alone.
    found = [
        Partition(name, None, None) if default else Partition(name, start, end)
        for name, default, start, end in rows
        if default or (start is not None and end is not None)
    ]
    return sorted(found, key=lambda p: (p.is_default, p.start or datetime.min.replace(tzinfo=UTC)))


def partitions_create(*, now: datetime, days_ahead: int = DAYS_AHEAD) -> list[str]:
    """Make the day partitions of ``now``'s UTC day and the ``days_ahead`` days after it that do
    not exist yet; returns their names. A lock not granted in LOCK_TIMEOUT stops it (logged)."""
    existing = partitions()
    default = next((p.name for p in existing if p.is_default), None)
    created = []
    today = now.astimezone(UTC).date()
    for offset in range(days_ahead + 1):
        day = today + timedelta(days=offset)
        start, end = _day_start(day), _day_start(day + timedelta(days=1))
        if any(not p.is_default and p.start < end and p.end > start for p in existing):
            continue
        try:
            _attach_day(partition_name(day), start, end, default)
        except DatabaseError:
            logger.warning("history partition not created; the next cleanup tries again", exc_info=True)
            break
        created.append(partition_name(day))
    if created:
        logger.info("history partitions created", extra={"partitions": created})
    return created


def _attach_day(name: str, start: datetime, end: datetime, default: str | None) -> None:
    quote = connection.ops.quote_name
    table, partition = quote(_table()), quote(name)
    within = f"created_at >= {_literal(start)} AND created_at < {_literal(end)}"
    compression = " INCLUDING COMPRESSION" if connection.pg_version >= 140000 else ""
    # Made apart and attached, not CREATE TABLE ... PARTITION OF: attaching locks the table
    # only against other schema changes (SHARE UPDATE EXCLUSIVE), so recording and reading go on.
    # Names come from the model and the date, bounds from the date: nothing from input.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cursor.execute(f"CREATE TABLE {partition} (LIKE {table} INCLUDING DEFAULTS INCLUDING STORAGE{compression})")
        if default is not None:
            # Rows of this day recorded before its partition existed: attaching would fail on them.
            cursor.execute(
                f"WITH moved AS (DELETE FROM {quote(default)} WHERE {within} RETURNING *) "  # noqa: S608
                f"INSERT INTO {partition} SELECT * FROM moved"
            )
            if cursor.rowcount:
                logger.warning(
                    "history rows moved from the default partition", extra={"partition": name, "rows": cursor.rowcount}
                )
        # The constraint proves the bounds, so attaching does not scan the new table for them.
        cursor.execute(f"ALTER TABLE {partition} ADD CONSTRAINT {quote(name + '_bounds')} CHECK ({within})")
        cursor.execute(
            f"ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
        cursor.execute(f"ALTER TABLE {partition} DROP CONSTRAINT {quote(name + '_bounds')}")


def _row_count(cursor, name: str) -> int:
    """The rows of a partition about to be dropped, for the log and the cleanup's total.

    PostgreSQL's figure (pg_class.reltuples, set by the last VACUUM or ANALYZE, which autovacuum
    runs on a partition after its day of inserts) when there is one: counting a day of history
    means reading all of it, minutes of I/O for a few hundred million rows, only to say how many
    there were. A partition never vacuumed nor analyzed (reltuples -1: small, or just made) is counted.
    """
    cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [name])
    (estimate,) = cursor.fetchone()
    if estimate >= 0:
        return estimate
    cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(name)}")  # noqa: S608 (a name from the catalog)
    return cursor.fetchone()[0]


def partitions_remove_before(cutoff: datetime) -> int:
    """Remove the history older than ``cutoff``; returns the number of rows removed.

    Day partitions that end at or before the cutoff are detached, then dropped; the default
    partition and a partition straddling the cutoff lose their older rows by DELETE. A partition
    that could not be detached (its lock not granted in LOCK_TIMEOUT) is kept whole for the next
    run: deleting its rows one by one is the cost this module exists to avoid. The rows of a
    dropped partition are counted as ``_row_count`` says: PostgreSQL's own figure once it has one.
    """
    removed = _drop_detached_before(cutoff)
    quote = connection.ops.quote_name
    for partition in partitions():
        name = quote(partition.name)
        if not partition.is_default and partition.end <= cutoff:
            # Detached first, in a transaction of its own: the table's lock is held for a catalog
            # change only, not while the day's files are removed (about 0.5 s per GB measured,
            # docs/performance.md), which dropping it as a partition would hold the lock through.
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    rows = _row_count(cursor, partition.name)
                    cursor.execute(f"ALTER TABLE {quote(_table())} DETACH PARTITION {name}")
            except DatabaseError:
                logger.warning(
                    "history partition not detached; the next cleanup tries again",
                    extra={"partition": partition.name},
                    exc_info=True,
                )
                continue
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {name}")  # IF EXISTS: a second beat's cleanup
            logger.info("history partition dropped", extra={"partition": partition.name, "rows": rows})
            removed += rows
        elif partition.is_default or partition.start < cutoff:
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {name} WHERE created_at < {_literal(cutoff)}")  # noqa: S608
                removed += cursor.rowcount
    return removed


def _drop_detached_before(cutoff: datetime) -> int:
    """Drop day tables left detached (a cleanup stopped between its detach and its drop)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND NOT c.relispartition "
            "AND c.relname ~ %s AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(%s))",
            [f"^{_table()}_p[0-9]{{8}}$", _table()],
        )
        names = [row[0] for row in cursor.fetchall()]
    removed = 0
    for name in names:
        day = datetime.strptime(name[-8:], "%Y%m%d").replace(tzinfo=UTC)
        if day + timedelta(days=1) > cutoff:
            continue
        with connection.cursor() as cursor:
            rows = _row_count(cursor, name)
            cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(name)}")
        logger.info("detached history partition dropped", extra={"partition": name, "rows": rows})
        removed += rows
    return removed
