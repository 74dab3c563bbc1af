"""Prediction history's JSON columns compressed with lz4 instead of pglz, on PostgreSQL 14+.

A recorded input of a few KB (256 floats is ~5 KB of JSON) is compressed when its row is
written, and pglz is the slow part of writing it: measured on 2 cores, writing a history row
with such an input took 247 µs of PostgreSQL time with pglz and 178 µs with lz4 (mean of three
runs of 2,000 rows; docs/performance.md), for about 13% more bytes on disk. Only the columns'
setting changes (no table rewrite): rows already written keep their compression, new ones use
lz4. Skipped on a server built without lz4 and on other databases.
"""

from django.db import migrations

COLUMNS = ("input_data", "output_data")


def compression_methods(connection) -> set[str]:
    """The column compression methods the database offers: none but on PostgreSQL 14+ (the
    setting is new in 14), lz4 only where the server was built with it."""
    if connection.vendor != "postgresql":
        return set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return set(row[0]) if row else set()


def _set_compression(method: str):
    def apply(apps, schema_editor):
        if method not in compression_methods(schema_editor.connection):
            return
        table = schema_editor.quote_name(apps.get_model("inference", "Prediction")._meta.db_table)
        for column in COLUMNS:
            # Names from the model and the constant above, never from input.
            name = schema_editor.quote_name(column)
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN {name} SET COMPRESSION {method}")

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_servingminute"),
    ]

    operations = [
        migrations.RunPython(_set_compression("lz4"), _set_compression("pglz"), elidable=False),
    ]
