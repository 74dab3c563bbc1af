"""Prediction history: GET /api/v1/models/{id}/predictions and /api/v1/predictions/{id}.

Predictions are buffered in the process and written in bulk; the background writer is off in
tests (tests/conftest.py), so each test flushes the buffer itself where a server would after
about a second.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from inference.history import history, history_cleanup
from inference.models import Prediction
from tests.inference.api import MODELS, PREDICTIONS, predict, predict_ok, predictions_url
from tests.inference.factories import make_add_model, make_int64_model

pytestmark = pytest.mark.django_db

ONE = {"X": [[1, 2, 3]], "Y": [[4, 5, 6]]}
TWO = {"X": [[1, 1, 1]], "Y": [[2, 2, 2]]}


@pytest.fixture
def adder(ready_model):
    return ready_model(make_add_model(), name="adder")


@pytest.fixture
def staff_client(ops_user):
    client = APIClient()
    client.force_login(ops_user)
    return client


def history_of(client: APIClient, model_id: str, **filters) -> dict:
    response = client.get(predictions_url(model_id), filters)
    assert response.status_code == 200, response.content
    return response.json()


def test_predictions_are_listed_newest_first_with_what_was_asked_and_answered(adder, predict_client):
    answers = [
        predict_ok(predict_client, adder["id"], ONE),
        predict_ok(predict_client, adder["id"], TWO),
        predict_ok(predict_client, adder["id"], ONE),  # a cache hit
    ]
    assert [answer["cached"] for answer in answers] == [False, False, True]
    assert history_of(predict_client, adder["id"])["count"] == 0  # buffered, not written yet

    assert history.flush() == 3

    listing = history_of(predict_client, adder["id"])
    assert listing["count"] == 3
    assert [row["id"] for row in listing["results"]] == [answer["id"] for answer in reversed(answers)]
    for row, answer, sent in zip(reversed(listing["results"]), answers, (ONE, TWO, ONE), strict=True):
        assert row["model_id"] == adder["id"]
        assert (row["model_name"], row["model_version"]) == ("adder", "1.0.0")
        assert row["api_key"] == "predictor"
        assert row["input_data"] == sent
        assert row["input_truncated"] is False
        assert row["output_data"] == answer["output_data"]
        assert row["warnings"] == []
        assert row["cached"] is answer["cached"]
        assert row["inference_time_ms"] == answer["inference_time_ms"]
        assert row["total_time_ms"] >= row["inference_time_ms"]
        assert datetime.fromisoformat(row["created_at"]) == datetime.fromisoformat(answer["created_at"])

    detail = predict_client.get(f"{PREDICTIONS}/{answers[1]['id']}")
    assert detail.status_code == 200
    assert detail.json() == listing["results"][1]


def test_refused_requests_are_not_recorded(adder, predict_client):
    assert predict(predict_client, adder["id"], {"X": [[1, 2, 3]]}).status_code == 400
    assert history.flush() == 0


def test_warnings_are_recorded(ready_model, predict_client):
    from tests.inference.factories import make_float16_model

    model = ready_model(make_float16_model(), name="half")
    answer = predict_ok(predict_client, model["id"], {"X": [[1.0, 70000.0, 2.0]]})
    history.flush()
    (row,) = history_of(predict_client, model["id"])["results"]
    assert row["warnings"] == answer["warnings"] == ["output 'Y': 1 non-finite value rendered as null"]
    assert row["output_data"] == {"Y": [[1.0, None, 2.0]]}


def test_history_filters_on_cached_and_time_range(adder, predict_client):
    oldest = predict_ok(predict_client, adder["id"], ONE)
    middle = predict_ok(predict_client, adder["id"], ONE)
    newest = predict_ok(predict_client, adder["id"], TWO)
    history.flush()

    def ids(**filters) -> list[str]:
        return [row["id"] for row in history_of(predict_client, adder["id"], **filters)["results"]]

    assert ids(cached="true") == [middle["id"]]
    assert ids(cached="false") == [newest["id"], oldest["id"]]
    assert ids(created_after=middle["created_at"]) == [newest["id"], middle["id"]]
    assert ids(created_before=middle["created_at"]) == [oldest["id"]]
    assert ids(created_after=oldest["created_at"], created_before=newest["created_at"]) == [middle["id"], oldest["id"]]
    assert ids(created_after=middle["created_at"], cached="false") == [newest["id"]]
    assert ids(created_after=(timezone.now() + timedelta(minutes=1)).isoformat()) == []


@pytest.mark.parametrize("bad", [{"created_after": "yesterday"}, {"created_before": "2026-13-01"}, {"cached": "maybe"}])
def test_history_refuses_filter_values_it_cannot_read(adder, predict_client, bad):
    # Ignoring the filter would answer every prediction to a client that asked for some.
    predict_ok(predict_client, adder["id"], ONE)
    history.flush()
    response = predict_client.get(predictions_url(adder["id"]), bad)
    assert response.status_code == 400, response.json()
    assert list(bad)[0] in response.json()["errors"]


def test_history_is_paginated(adder, predict_client):
    for value in range(55):
        predict_ok(predict_client, adder["id"], {"X": [[value, 0, 0]], "Y": [[0, 0, 0]]})
    history.flush()

    first = history_of(predict_client, adder["id"])
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["previous"] is None
    second = predict_client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None
    values = [row["input_data"]["X"][0][0] for row in first["results"] + second["results"]]
    assert values == list(reversed(range(55)))


def test_a_key_sees_only_its_own_predictions_and_staff_see_all(adder, predict_client, client_for, staff_client):
    mine = predict_ok(predict_client, adder["id"], ONE)
    other_client = client_for("predict", name="other")
    theirs = predict_ok(other_client, adder["id"], TWO)
    staff = predict_ok(staff_client, adder["id"], {"X": [[0, 0, 0]], "Y": [[0, 0, 0]]})
    history.flush()

    assert [row["id"] for row in history_of(predict_client, adder["id"])["results"]] == [mine["id"]]
    assert [row["id"] for row in history_of(other_client, adder["id"])["results"]] == [theirs["id"]]
    for hidden in (theirs, staff):
        response = predict_client.get(f"{PREDICTIONS}/{hidden['id']}")
        assert response.status_code == 404, hidden
        assert response.json()["code"] == "not_found"
    assert other_client.get(f"{PREDICTIONS}/{mine['id']}").status_code == 404

    everything = history_of(staff_client, adder["id"])
    assert [row["id"] for row in everything["results"]] == [staff["id"], theirs["id"], mine["id"]]
    assert [row["api_key"] for row in everything["results"]] == [None, "other", "predictor"]
    assert staff_client.get(f"{PREDICTIONS}/{mine['id']}").json()["id"] == mine["id"]


def test_a_key_that_never_predicted_sees_an_empty_history(adder, predict_client, client_for):
    answer = predict_ok(predict_client, adder["id"], ONE)
    history.flush()
    stranger = client_for("read", "predict", name="stranger")
    assert history_of(stranger, adder["id"]) == {"count": 0, "next": None, "previous": None, "results": []}
    assert stranger.get(f"{PREDICTIONS}/{answer['id']}").status_code == 404


def test_history_needs_the_predict_scope_and_a_known_model(adder, predict_client, read_client, api_client):
    answer = predict_ok(predict_client, adder["id"], ONE)
    history.flush()
    assert read_client.get(predictions_url(adder["id"])).status_code == 403
    assert read_client.get(f"{PREDICTIONS}/{answer['id']}").status_code == 403
    assert api_client.get(predictions_url(adder["id"])).status_code == 401
    assert api_client.get(f"{PREDICTIONS}/{answer['id']}").status_code == 401
    missing = predict_client.get(predictions_url(uuid.uuid4()))
    assert missing.status_code == 404
    assert missing.json()["code"] == "model_not_found"
    assert predict_client.get(f"{PREDICTIONS}/{uuid.uuid4()}").status_code == 404


def test_sample_rate_zero_records_nothing(adder, predict_client, settings):
    settings.HISTORY_SAMPLE_RATE = 0
    answer = predict_ok(predict_client, adder["id"], ONE)
    assert answer["id"]
    assert history.pending() == 0
    assert history.flush() == 0
    assert history_of(predict_client, adder["id"])["count"] == 0


def test_inputs_over_the_size_limit_are_not_stored(adder, predict_client, settings):
    settings.HISTORY_MAX_INPUT_BYTES = 100
    small = predict_ok(predict_client, adder["id"], ONE)  # about 60 bytes of body
    rows = [[float(value), 0.5, 0.25] for value in range(10)]
    large = predict_ok(predict_client, adder["id"], {"X": rows, "Y": rows})
    history.flush()

    stored = {row["id"]: row for row in history_of(predict_client, adder["id"])["results"]}
    assert (stored[small["id"]]["input_data"], stored[small["id"]]["input_truncated"]) == (ONE, False)
    assert (stored[large["id"]]["input_data"], stored[large["id"]]["input_truncated"]) == (None, True)
    assert stored[large["id"]]["output_data"] == large["output_data"]


def test_cleanup_deletes_history_older_than_the_retention(adder, predict_client, settings):
    settings.HISTORY_RETENTION_DAYS = 7
    answers = [predict_ok(predict_client, adder["id"], {"X": [[age, 0, 0]], "Y": [[0, 0, 0]]}) for age in (0, 6, 8, 40)]
    history.flush()
    now = timezone.now()
    for answer, age in zip(answers, (0, 6, 8, 40), strict=True):
        Prediction.objects.filter(pk=answer["id"]).update(created_at=now - timedelta(days=age))

    assert history_cleanup() == 2

    remaining = [row["input_data"]["X"][0][0] for row in history_of(predict_client, adder["id"])["results"]]
    assert remaining == [0, 6]
    assert history_cleanup() == 0


@pytest.mark.django_db(transaction=True)
def test_a_model_deleted_before_the_flush_does_not_block_the_rest_of_the_history(
    ready_model, predict_client, manage_client
):
    doomed = ready_model(make_add_model(), name="doomed")
    kept = ready_model(make_int64_model(), name="kept")
    predict_ok(predict_client, doomed["id"], ONE)
    assert manage_client.delete(f"{MODELS}/{doomed['id']}").status_code == 204
    answer = predict_ok(predict_client, kept["id"], {"X": [[1, 2]]})

    history.flush()

    assert [row["id"] for row in history_of(predict_client, kept["id"])["results"]] == [answer["id"]]
    assert history.pending() == 0
    later = predict_ok(predict_client, kept["id"], {"X": [[3, 4]]})
    assert history.flush() == 1
    assert history_of(predict_client, kept["id"])["results"][0]["id"] == later["id"]


def test_cleanup_history_command_and_task_delete_old_rows(settings):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from inference.models import Prediction
    from inference.tasks import cleanup_history
    from registry.models import MLModel

    model = MLModel.objects.create(name="old", version="1.0.0")
    old = timezone.now() - timedelta(days=settings.HISTORY_RETENTION_DAYS + 1)
    for moment in (old, old, timezone.now()):
        Prediction.objects.create(
            model=model,
            model_name="old",
            model_version="1.0.0",
            inference_time_ms=0,
            total_time_ms=0,
            created_at=moment,
        )
    call_command("cleanup_history")
    assert Prediction.objects.count() == 1
    Prediction.objects.update(created_at=old)
    assert cleanup_history() == 1


def test_large_recorded_inputs_are_stored_lz4_compressed_on_postgresql(adder, predict_client):
    from django.db import connection

    migration = importlib.import_module("inference.migrations.0003_history_lz4")
    if "lz4" not in migration.compression_methods(connection):
        pytest.skip("needs PostgreSQL 14+ built with lz4")
    rows = [[float(value), value / 7, value / 3] for value in range(300)]  # ~10 KB of JSON: compressed
    answer = predict_ok(predict_client, adder["id"], {"X": rows, "Y": rows})
    assert history.flush() == 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(input_data), pg_column_compression(output_data) "
            "FROM inference_prediction WHERE id = %s",
            [answer["id"]],
        )
        assert cursor.fetchone() == ("lz4", "lz4")
    stored = history_of(predict_client, adder["id"])["results"][0]
    assert stored["input_data"] == {"X": rows, "Y": rows}  # read back whole
    assert stored["output_data"] == answer["output_data"]
