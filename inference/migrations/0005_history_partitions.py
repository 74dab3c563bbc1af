"""Prediction history partitioned by day on PostgreSQL, so that retention drops whole days
(inference/history_partitions.py says why and how the partitions are kept up).

The table is rebuilt: a partitioned table by RANGE (created_at) takes the old one's name, its
columns (with their defaults, storage and compression), its foreign keys and its indexes under
the same names (as partitioned indexes), a DEFAULT partition and one partition per UTC day from
the oldest day still within HISTORY_RETENTION_DAYS to a week ahead; the rows are copied in and
the old table dropped. Nothing references this table, so nothing else changes.

PostgreSQL requires a partitioned table's primary key to include the partition key: the key
becomes (id, created_at). Django still treats ``id`` alone as the primary key (its state does
not change: no state operation here), and ids stay unique because they are random UUIDs
(version 4, 122 random bits, core.ids): a collision among 10^12 rows has a chance near 10^-13.

The copy holds the table's lock while it runs (the history writers wait, their records buffered;
reads of the history wait too): 17 s per million rows on the 2-core bench machine
(bench/history_retention.py --migrate-rows; docs/operations.md). The reverse rebuilds a plain
table the same way. Both do nothing on other databases (SQLite: the
embedded setup keeps the plain table) or when the table already has the wanted form.
"""

from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.db import migrations

DAYS_AHEAD = 7  # as inference.history_partitions.DAYS_AHEAD; the hourly cleanup keeps it up


def _is_partitioned(cursor, table: str) -> bool:
    cursor.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row and row[0])


def _rebuild(*, partitioned: bool):
    def rebuild(apps, schema_editor):
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return
        table = apps.get_model("inference", "Prediction")._meta.db_table
        quote = schema_editor.quote_name
        old = f"{table}_rebuilt"
        with connection.cursor() as cursor:
            if _is_partitioned(cursor, table) == partitioned:
                return
            # What the old table has, to be made again on the new one under the same names.
            cursor.execute(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'f') ORDER BY conname",
                [table],
            )
            constraints = cursor.fetchall()
            cursor.execute(
                "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary ORDER BY i.relname",
                [table],
            )
            indexes = cursor.fetchall()
            cursor.execute(
                "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                [table],
            )
            (columns,) = cursor.fetchone()

        # Names from the catalog and the model, definitions as PostgreSQL prints them.
        execute = schema_editor.execute
        execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(old)}")
        for name, _ in indexes:
            execute(f"DROP INDEX {quote(name)}")
        for name, _, _ in constraints:
            execute(f"ALTER TABLE {quote(old)} DROP CONSTRAINT {quote(name)}")

        compression = " INCLUDING COMPRESSION" if connection.pg_version >= 140000 else ""
        like = f"(LIKE {quote(old)} INCLUDING DEFAULTS INCLUDING STORAGE{compression})"
        execute(f"CREATE TABLE {quote(table)} {like}" + (" PARTITION BY RANGE (created_at)" if partitioned else ""))
        if partitioned:
            _create_partitions(schema_editor, table, old)
        # Rows first, keys and indexes after: building an index once is cheaper than growing it.
        execute(f"INSERT INTO {quote(table)} ({columns}) SELECT {columns} FROM {quote(old)}")  # noqa: S608
        execute(f"DROP TABLE {quote(old)}")  # on the way back, its partitions go with it
        for name, kind, definition in constraints:
            if kind == "p":
                definition = "PRIMARY KEY (id, created_at)" if partitioned else "PRIMARY KEY (id)"
            execute(f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {definition}")
        for _, definition in indexes:
            # As read before the rename, so on the new table; a partitioned index reads "ON ONLY",
            # which would leave the partitions without it.
            execute(definition.replace(" ON ONLY ", " ON ", 1))

    return rebuild


def _create_partitions(schema_editor, table: str, old: str) -> None:
    quote = schema_editor.quote_name
    schema_editor.execute(f"CREATE TABLE {quote(table + '_default')} PARTITION OF {quote(table)} DEFAULT")
    today = datetime.now(UTC).date()
    first = today - timedelta(days=settings.HISTORY_RETENTION_DAYS)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT min(created_at) FROM {quote(old)}")  # noqa: S608
        (oldest,) = cursor.fetchone()
    # Older rows go to the default partition, and the next cleanup deletes them.
    day = min(max(first, oldest.astimezone(UTC).date()), today) if oldest is not None else today
    while day <= today + timedelta(days=DAYS_AHEAD):
        start, end = (datetime.combine(d, time.min, tzinfo=UTC).isoformat() for d in (day, day + timedelta(days=1)))
        schema_editor.execute(
            f"CREATE TABLE {quote(f'{table}_p{day:%Y%m%d}')} PARTITION OF {quote(table)} "
            f"FOR VALUES FROM ('{start}') TO ('{end}')"
        )
        day += timedelta(days=1)


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0004_key_reverse_relations"),
    ]

    operations = [
        migrations.RunPython(_rebuild(partitioned=True), _rebuild(partitioned=False), elidable=False),
    ]
