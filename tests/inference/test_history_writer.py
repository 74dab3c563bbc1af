"""The history writer (inference.history): what is recorded is read back exactly, whatever the
text holds, and prediction ids are time-ordered (UUID version 7, core.ids).

On PostgreSQL the writer makes COPY's text format itself (`copy_text`), so these records carry
every character that format escapes (backslash, tab, newline, carriage return), in every kind of
column, and in JSON, where orjson's own escapes hold backslashes.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone as django_timezone

from access.models import APIKey
from core import ids
from inference.history import HistoryRecord, copy_text, history
from inference.models import Prediction
from registry.models import MLModel
from tests.inference.api import PREDICTIONS, predict_ok, predictions_url
from tests.inference.factories import make_add_model, make_string_model

pytestmark = pytest.mark.django_db

AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\t not a tab",
    "double \"quote\" and 'single'",
    "ünïcødé € 😀 中文",
    "",
    "\\",
    "ends with a backslash\\",
]


def recorded(model: MLModel, **fields) -> HistoryRecord:
    values = {
        "id": ids.uuid7(),
        "model_id": model.pk,
        "model_name": model.name,
        "model_version": model.version,
        "api_key_id": None,
        "user_id": None,
        "input_data": {"X": [[1.0, 2.0, 3.0]]},
        "input_truncated": False,
        "output_data": {"Z": [[2.0, 4.0, 6.0]]},
        "warnings": [],
        "cached": False,
        "inference_time_ms": 0.125,
        "total_time_ms": 0.5,
        "created_at": django_timezone.now(),
    }
    return HistoryRecord(**{**values, **fields})


@pytest.fixture
def model():
    return MLModel.objects.create(name="recorded", version="1.0.0")


def test_every_column_is_read_back_exactly_as_recorded(model, predict_client, ops_user):
    records = [
        recorded(
            model,
            model_name="name\twith\\odd\ncharacters",
            model_version="1.0.0\r\\N",
            api_key_id=predict_client.api_key.pk,
            user_id=ops_user.pk,
            input_data={"text": AWKWARD, "nested": {"tab\tkey": [None, True, False, 0, -1, 1.5e-300, 12345.678]}},
            output_data={"echo": AWKWARD, "probabilities": [[0.1, 0.2, 0.7000000000000001]]},
            warnings=["output 'echo' had a \\ and a\ttab", "ünïcødé"],
            cached=True,
            inference_time_ms=0.1 + 0.2,
            total_time_ms=1234.5678,
            created_at=datetime(2026, 12, 7, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
        ),
        recorded(model, input_data=None, input_truncated=True, output_data=None, warnings=[]),
        recorded(model, input_data="\\", output_data=["\t"], warnings=["\n"]),
    ]
    for record in records:
        history.record(record)

    assert history.flush() == 3

    for record in records:
        row = Prediction.objects.get(pk=record.id)
        assert {name: getattr(row, name) for name in HistoryRecord._fields} == record._asdict()


def test_recorded_strings_come_back_exactly_through_the_history_api(ready_model, predict_client):
    model = ready_model(make_string_model(), name="strings")
    answer = predict_ok(predict_client, model["id"], {"text": AWKWARD})
    assert answer["output_data"]["echo"] == AWKWARD

    assert history.flush() == 1

    (row,) = predict_client.get(predictions_url(model["id"])).json()["results"]
    assert row["id"] == answer["id"]
    assert row["input_data"] == {"text": AWKWARD}
    assert row["output_data"] == answer["output_data"]
    assert predict_client.get(f"{PREDICTIONS}/{answer['id']}").json() == row


def test_the_copy_text_escapes_what_copy_reads_as_separators():
    record = recorded(
        MLModel(name="a\tb", version="1\n2"),
        api_key_id="k\\ey",
        input_data=["x\ty"],
        output_data=None,
        warnings=["back\\slash"],
    )

    (line,) = copy_text([record]).decode().splitlines()

    values = line.split("\t")
    assert len(values) == len(HistoryRecord._fields)
    assert values[2:5] == ["a\\tb", "1\\n2", "k\\\\ey"]
    assert values[5] == "\\N"  # no user
    assert values[6] == '["x\\\\ty"]'  # orjson's escape of the tab, its backslash doubled
    assert values[8] == "\\N"
    assert values[9] == '["back\\\\\\\\slash"]'


def test_prediction_ids_are_version_7_and_increase(ready_model, predict_client):
    model = ready_model(make_add_model(), name="adder")
    answers = [predict_ok(predict_client, model["id"], {"X": [[n, 2, 3]], "Y": [[4, 5, 6]]}) for n in range(5)]
    made = [uuid.UUID(answer["id"]) for answer in answers]

    assert history.flush() == 5

    assert all(pk.version == 7 for pk in made)
    assert made == sorted(made)
    assert list(Prediction.objects.order_by("id").values_list("id", flat=True)) == made
    rows = predict_client.get(predictions_url(model["id"])).json()["results"]
    assert [row["id"] for row in rows] == [answer["id"] for answer in reversed(answers)]


def test_uuid7_carries_the_time_and_increases_within_a_thread():
    before = int(datetime.now(UTC).timestamp() * 1000)
    made = [ids.uuid7() for _ in range(5000)]
    after = int(datetime.now(UTC).timestamp() * 1000)

    assert made == sorted(made) and len(set(made)) == len(made)
    assert {pk.version for pk in made} == {7}
    assert {pk.variant for pk in made} == {uuid.RFC_4122}
    assert before <= made[0].int >> 80 <= made[-1].int >> 80 <= after + 1


def test_uuid7_of_concurrent_threads_are_distinct():
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=lambda out: out.extend(ids.uuid7() for _ in range(2000)), args=(out,)) for out in made
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [pk for out in made for pk in out]
    assert len(set(everything)) == len(everything)
    assert all(out == sorted(out) for out in made)


@pytest.mark.django_db(transaction=True)
def test_keys_and_users_deleted_before_the_flush_are_detached_and_the_rows_kept(model, make_key):
    key, _ = make_key("predict", name="gone")
    user = get_user_model().objects.create_user(username="gone", is_staff=True)
    kept_key, _ = make_key("predict", name="kept")
    orphaned = recorded(model, api_key_id=key.pk, user_id=user.pk)
    untouched = recorded(model, api_key_id=kept_key.pk)
    history.record(orphaned)
    history.record(untouched)
    APIKey.objects.filter(pk=key.pk).delete()
    user.delete()

    assert history.flush() == 2

    assert Prediction.objects.filter(pk=orphaned.id).values_list("api_key_id", "user_id").get() == (None, None)
    assert Prediction.objects.get(pk=untouched.id).api_key_id == kept_key.pk
    assert history.pending() == 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the indexes dropped by migration 0008")
def test_the_history_keeps_one_index_per_lookup():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'inference_prediction'::regclass"
        )
        definitions = sorted(definition.split(" USING ")[1] for (definition,) in cursor.fetchall())

    assert definitions == [
        "btree (api_key_id, created_at DESC)",
        "btree (created_at)",
        "btree (id, created_at)",
        "btree (model_id, created_at DESC)",
        "btree (user_id) WHERE (user_id IS NOT NULL)",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_nul_character_is_recorded_as_the_replacement_character_and_blocks_nothing(ready_model, predict_client):
    """PostgreSQL's jsonb refuses U+0000: before, one such input failed its batch and every retry."""
    model = ready_model(make_string_model(), name="strings")
    nul = predict_ok(predict_client, model["id"], {"text": ["a\x00b", "\\u0000 is not a NUL"]})
    plain = predict_ok(predict_client, model["id"], {"text": ["setosa"]})

    assert history.flush() == 2

    rows = {row["id"]: row for row in predict_client.get(predictions_url(model["id"])).json()["results"]}
    assert rows[nul["id"]]["input_data"] == {"text": ["a\ufffdb", "\\u0000 is not a NUL"]}
    assert rows[nul["id"]]["output_data"]["echo"] == ["a\ufffdb", "\\u0000 is not a NUL"]
    assert rows[plain["id"]]["input_data"] == {"text": ["setosa"]}
    assert history.pending() == 0


def test_a_flush_writes_what_was_buffered_when_it_began_in_batches_of_a_thousand(model, monkeypatch):
    """Records that arrive while a flush writes wait for the next one: chasing them would write
    them a few rows at a time, each write with its fixed cost (the orphan check's queries, a
    transaction, a COPY)."""
    from inference import history as history_module

    history.discard()
    for _ in range(2500):
        history.record(recorded(model))
    writes = []
    write = history_module._write

    def write_while_requests_arrive(batch):
        writes.append(len(batch))
        if len(writes) <= 3:
            history.record(recorded(model))  # a request answered meanwhile
        write(batch)

    monkeypatch.setattr(history_module, "_write", write_while_requests_arrive)
    assert history.flush() == 2500
    assert writes == [1000, 1000, 500]
    assert history.pending() == 3  # the next flush writes them
    assert history.flush() == 3
    assert Prediction.objects.filter(model=model).count() == 2503
