"""Prediction history with fewer indexes to write per row, and time-ordered ids.

Every recorded prediction wrote eight index entries; four of them only repeated what another
index holds:
- the single-column indexes on ``model_id`` and ``api_key_id`` (and the ``varchar_pattern_ops``
  copy PostgreSQL keeps of the latter, for LIKE lookups nothing makes) are the first column of
  ``prediction_model_recent`` and ``prediction_key_recent``, which serve the same lookups;
- the index on ``user_id`` held a row for every prediction, almost all NULL: a partial index of
  the rows that have a user (``prediction_user``) serves the SET NULL of a deleted user.

The indexes are dropped by name (the names Django gave them in 0001, which 0005 kept), without
Django's usual way of changing ``db_index``: that also drops and re-adds each foreign key, which
checks every row of the table under its lock. On the partitioned table a dropped or created
index is dropped or created on every partition. The new default of ``id`` (UUID version 7,
core.ids) is Python's, not the database's: nothing changes in the database for it. The way back
makes the three single-column indexes again (not the LIKE copy, which nothing used).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import core.ids

REDUNDANT = {
    "api_key_id": "inference_prediction_api_key_id_6965c0ce",
    "model_id": "inference_prediction_model_id_7321e33d",
    "user_id": "inference_prediction_user_id_8ccca667",
}
LIKE_COPY = "inference_prediction_api_key_id_6965c0ce_like"


class Migration(migrations.Migration):
    dependencies = [
        ("access", "0002_unique_key_names"),
        ("inference", "0007_shadow_minutes"),
        ("registry", "0011_pending_reference"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    [f'DROP INDEX IF EXISTS "{name}"' for name in [*REDUNDANT.values(), LIKE_COPY]],
                    [
                        f'CREATE INDEX "{name}" ON "inference_prediction" ("{column}")'
                        for column, name in REDUNDANT.items()
                    ],
                    elidable=False,
                ),
            ],
            state_operations=[
                # A default made in Python: no database changes for it (SQLite would copy the table).
                migrations.AlterField(
                    model_name="prediction",
                    name="id",
                    field=models.UUIDField(default=core.ids.uuid7, editable=False, primary_key=True, serialize=False),
                ),
                migrations.AlterField(
                    model_name="prediction",
                    name="api_key",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="predictions",
                        to="access.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="prediction",
                    name="model",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="predictions",
                        to="registry.mlmodel",
                    ),
                ),
                migrations.AlterField(
                    model_name="prediction",
                    name="user",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="prediction",
            index=models.Index(condition=models.Q(("user__isnull", False)), fields=["user"], name="prediction_user"),
        ),
    ]
