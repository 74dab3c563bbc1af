"""Prediction history partitioned by day on PostgreSQL (inference.history_partitions): the
partitions the migration and the hourly cleanup make, retention by dropping whole days, the
default partition for rows no day takes, and deletes that cascade into every partition. On
SQLite (the embedded setup) the table stays plain and retention is a DELETE.

Rows are written by the real recorder (history.record, then the flush a server's writer thread
would do) with the created_at each test needs.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest
from django.apps import apps
from django.db import connection
from django.db.utils import ConnectionHandler
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core import ids
from inference import history_partitions
from inference.history import HistoryRecord, history, history_cleanup, retention_cutoff
from inference.models import Prediction
from registry.models import MLModel
from tests.granian_server import manage
from tests.inference.api import MODELS, PREDICTIONS, predictions_url
from tests.inference.factories import make_add_model

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="partitions are PostgreSQL's")
PRIMARY_KEY = "inference_prediction_pkey"


def day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time.min, tzinfo=UTC)


def record(model: MLModel, at: datetime, *, api_key=None) -> str:
    """One history record as the predict service makes it, created at ``at``; written by the flush."""
    pk = ids.uuid7()
    history.record(
        HistoryRecord(
            id=pk,
            model_id=model.pk,
            model_name=model.name,
            model_version=model.version,
            api_key_id=api_key.pk if api_key is not None else None,
            user_id=None,
            input_data={"X": [[1.0, 2.0, 3.0]]},
            input_truncated=False,
            output_data={"Z": [[2.0, 4.0, 6.0]]},
            warnings=[],
            cached=False,
            inference_time_ms=0.1,
            total_time_ms=0.2,
            created_at=at,
        )
    )
    return str(pk)


def partition_of(prediction_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM inference_prediction WHERE id = %s", [prediction_id])
        return cursor.fetchone()[0]


def partition_names() -> set[str]:
    return {partition.name for partition in history_partitions.partitions()}


def day_partition(moment: datetime) -> str:
    return history_partitions.partition_name(moment.astimezone(UTC).date())


@pytest.fixture
def model(db) -> MLModel:
    return MLModel.objects.create(name="recorded", version="1.0.0")


@on_postgresql
def test_migrate_leaves_the_history_partitioned_by_day_with_a_week_ahead():
    assert history_partitions.is_partitioned()
    today = timezone.now()
    names = partition_names()
    assert history_partitions.default_partition_name() in names
    # DAYS_AHEAD - 1: a test run that began the UTC day before still has every one of these.
    for offset in range(history_partitions.DAYS_AHEAD):
        assert day_partition(today + timedelta(days=offset)) in names
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'inference_prediction_pkey'"
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, created_at)"
        # The model's indexes, as partitioned indexes that every partition has.
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'inference_prediction'")
        parent_indexes = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", [day_partition(today)])
        assert cursor.fetchone()[0] == len(parent_indexes)
    assert {"prediction_model_recent", "prediction_key_recent"} <= parent_indexes


@on_postgresql
def test_the_cleanup_task_makes_the_partitions_of_the_days_ahead(model):
    from inference.tasks import cleanup_history

    now = timezone.now()
    ahead = [day_partition(now + timedelta(days=offset)) for offset in (5, 6, 7)]
    with connection.cursor() as cursor:
        for name in ahead:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
    assert not set(ahead) & partition_names()

    cleanup_history()

    assert set(ahead) <= partition_names()
    later = record(model, now + timedelta(days=6))
    history.flush()
    assert partition_of(later) == ahead[1]


@on_postgresql
def test_retention_drops_whole_old_days_and_keeps_every_newer_row_exactly(model, settings):
    settings.HISTORY_RETENTION_DAYS = 5
    now = day_start(timezone.now()) + timedelta(hours=12)
    cutoff = retention_cutoff(now)
    assert cutoff == day_start(now) - timedelta(days=5)
    history_partitions.partitions_create(now=now - timedelta(days=10), days_ahead=10)
    daily = {age: record(model, now - timedelta(days=age)) for age in range(11)}  # one row a day, noon
    just_before, at_cutoff = record(model, cutoff - timedelta(microseconds=1)), record(model, cutoff)
    history.flush()
    # The foreign keys are checked at commit, and a table with checks pending cannot be dropped
    # in the same transaction: check them now, as the commit of a server's flush would.
    connection.check_constraints()
    with connection.cursor() as cursor:  # one day with PostgreSQL's own row count, as autovacuum leaves it
        cursor.execute(f"ANALYZE {day_partition(now - timedelta(days=10))}")
    assert partition_of(just_before) == day_partition(cutoff - timedelta(days=1))
    assert partition_of(at_cutoff) == day_partition(cutoff)

    assert history_cleanup(now=now) == 6  # the days aged 6 to 10, and the row just before the cutoff

    kept = {str(pk) for pk in Prediction.objects.values_list("pk", flat=True)}
    assert kept == {daily[age] for age in range(6)} | {at_cutoff}
    names = partition_names()
    for age in range(6, 11):
        assert day_partition(now - timedelta(days=age)) not in names
    assert day_partition(cutoff) in names
    assert history_cleanup(now=now) == 0


@on_postgresql
def test_rows_no_day_takes_land_in_the_default_partition_and_are_read_and_retained(
    model, predict_client, ops_user, settings
):
    long_ago = datetime(1990, 5, 17, 8, 30, tzinfo=UTC)
    far_ahead = datetime(2100, 1, 1, 12, tzinfo=UTC)
    old = record(model, long_ago, api_key=predict_client.api_key)
    future = record(model, far_ahead, api_key=predict_client.api_key)
    now = timezone.now()
    today = record(model, now, api_key=predict_client.api_key)
    assert history.flush() == 3
    default = history_partitions.default_partition_name()
    assert partition_of(old) == partition_of(future) == default
    assert partition_of(today) == day_partition(now)

    # Read as any other row: the API's detail and filters, the admin's change page.
    detail = predict_client.get(f"{PREDICTIONS}/{old}")
    assert detail.status_code == 200
    assert datetime.fromisoformat(detail.json()["created_at"]) == long_ago
    listing = predict_client.get(predictions_url(model.pk), {"created_before": "2000-01-01T00:00:00Z"}).json()
    assert [row["id"] for row in listing["results"]] == [old]
    listing = predict_client.get(predictions_url(model.pk)).json()
    assert [row["id"] for row in listing["results"]] == [future, today, old]
    admin = APIClient()
    admin.force_login(ops_user)
    assert admin.get(reverse("admin:inference_prediction_change", args=[future])).status_code == 200

    assert history_cleanup() == 1
    assert {str(pk) for pk in Prediction.objects.values_list("pk", flat=True)} == {future, today}
    assert partition_of(future) == default


@on_postgresql
def test_a_day_partition_made_later_takes_the_rows_that_waited_in_the_default(model, predict_client):
    now = timezone.now()
    early = record(model, now + timedelta(days=20), api_key=predict_client.api_key)  # no partition that far yet
    history.flush()
    assert partition_of(early) == history_partitions.default_partition_name()

    history_cleanup(now=now + timedelta(days=15))  # makes the days 15 to 22 ahead

    assert partition_of(early) == day_partition(now + timedelta(days=20))
    assert predict_client.get(f"{PREDICTIONS}/{early}").json()["id"] == early


def test_deleting_a_model_or_a_key_reaches_the_rows_of_every_partition(
    ready_model, manage_client, client_for, predict_client
):
    adder = MLModel.objects.get(pk=ready_model(make_add_model(), name="adder")["id"])
    other = MLModel.objects.get(pk=ready_model(make_add_model(), name="other")["id"])
    caller = client_for("read", "predict", name="short-lived")
    moments = [timezone.now(), timezone.now() + timedelta(days=3), datetime(1990, 1, 1, tzinfo=UTC)]
    doomed = [record(adder, at, api_key=caller.api_key) for at in moments]
    kept = [record(other, at, api_key=caller.api_key) for at in moments]
    assert history.flush() == 6

    assert manage_client.delete(f"{MODELS}/{adder.pk}").status_code == 204
    assert not Prediction.objects.filter(pk__in=doomed).exists()
    assert Prediction.objects.filter(pk__in=kept).count() == 3

    caller.api_key.delete()  # the key's rows stay, without their key
    assert list(Prediction.objects.filter(pk__in=kept).values_list("api_key", flat=True)) == [None] * 3


@on_postgresql
def test_a_day_left_detached_by_an_interrupted_cleanup_is_dropped_by_the_next(model):
    day = datetime(2001, 1, 1, tzinfo=UTC)
    history_partitions.partitions_create(now=day, days_ahead=1)
    record(model, day + timedelta(hours=1))
    kept = record(model, day + timedelta(days=1, hours=1))
    history.flush()
    connection.check_constraints()
    with connection.cursor() as cursor:  # what a cleanup stopped between its detach and its drop leaves
        cursor.execute(f"ALTER TABLE inference_prediction DETACH PARTITION {day_partition(day)}")

    assert history_partitions.partitions_remove_before(day + timedelta(days=1)) == 1

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [day_partition(day)])
        assert cursor.fetchone()[0] is None
    assert {str(pk) for pk in Prediction.objects.values_list("pk", flat=True)} == {kept}


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_partition_the_cleanup_cannot_lock_is_kept_whole_for_the_next_run(model):
    """A long read of the history holds the table: the detach waits LOCK_TIMEOUT, gives up, and
    deletes none of that day's rows meanwhile (doing so row by row is the cost avoided)."""
    day = datetime(2001, 1, 1, tzinfo=UTC)
    name = day_partition(day)
    try:
        assert history_partitions.partitions_create(now=day, days_ahead=0) == [name]
        kept = record(model, day + timedelta(hours=12))
        history.flush()
        settings = connection.settings_dict
        with psycopg.connect(
            host=settings["HOST"],
            port=settings["PORT"] or 5432,
            user=settings["USER"],
            password=settings["PASSWORD"] or None,
            dbname=settings["NAME"],
        ) as reader:
            reader.execute("SELECT count(*) FROM inference_prediction").fetchone()  # its transaction stays open

            assert history_partitions.partitions_remove_before(day + timedelta(days=1)) == 0

            assert name in partition_names()
            assert Prediction.objects.filter(pk=kept).exists()
            reader.rollback()
        assert history_partitions.partitions_remove_before(day + timedelta(days=1)) == 1
        assert name not in partition_names()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")


def test_the_partitioning_migration_does_nothing_on_sqlite():
    migration = importlib.import_module("inference.migrations.0005_history_partitions")
    sqlite = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})["default"]
    try:
        for operation in migration.Migration.operations:
            with sqlite.schema_editor() as editor, CaptureQueriesContext(sqlite) as queries:
                operation.code(apps, editor)
                operation.reverse_code(apps, editor)
            assert queries.captured_queries == []
    finally:
        sqlite.close()


@pytest.mark.slow
def test_the_embedded_setup_migrates_and_cleans_up_a_plain_sqlite_history(tmp_path):
    database = tmp_path / "embedded.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    for command in (["migrate", "--no-input"], ["cleanup_history"]):
        result = manage(env, *command)
    assert "deleted 0 predictions" in result.stdout
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "inference_prediction" in tables
    assert not {table for table in tables if table.startswith("inference_prediction_")}
