"""Per-minute serving statistics: recorded from real requests, written by the flush, read by
the dashboard's selectors (inference.stats)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from inference.models import LATENCY_BOUNDS_MS, LATENCY_FIELDS, ServingMinute
from inference.serving_stats import serving_stats, serving_stats_cleanup
from inference.stats import latency_histogram, quantile_ms, serving_summary, serving_timeseries
from tests.inference.api import named_predict_url, post_body, predict
from tests.inference.test_batching import dense_model
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def iris(ready_model):
    return ready_model(make_iris_model(zipmap=False), name="iris", version="1.0.0")


def test_requests_become_minute_rows_with_their_counts(iris, predict_client):
    assert predict(predict_client, iris["id"], {"X": ROW}).status_code == 200  # miss, runs
    assert predict(predict_client, iris["id"], {"X": ROW}).status_code == 200  # hit
    assert predict(predict_client, iris["id"], {"X": ROW}, skip_cache=True).status_code == 200  # no lookup, runs
    assert predict(predict_client, iris["id"], {"X": [[1.0, 2.0]]}).status_code == 400  # bad shape
    assert ServingMinute.objects.count() == 0  # nothing written on the request path

    assert serving_stats.flush() == 1
    (row,) = ServingMinute.objects.all()
    assert str(row.model_id) == iris["id"]
    assert row.minute.second == 0
    assert (row.requests, row.errors, row.cache_hits, row.cache_misses) == (4, 1, 1, 1)
    assert (row.client_errors, row.server_errors) == (1, 0)  # the bad shape is the caller's
    assert (row.inferences, row.executions) == (2, 2)
    assert sum(getattr(row, field) for field in LATENCY_FIELDS) == 4
    assert row.latency_sum_ms > 0
    assert serving_stats.flush() == 0  # what was written is not written again


def test_flushes_of_several_processes_add_up(iris, predict_client):
    """Two writers (processes) upserting the same minute: the row holds both counts."""
    assert predict(predict_client, iris["id"], {"X": ROW}).status_code == 200
    serving_stats.flush()
    assert predict(predict_client, iris["id"], {"X": ROW}).status_code == 200
    assert predict(predict_client, iris["id"], {"X": ROW}).status_code == 200
    serving_stats.flush()
    (row,) = ServingMinute.objects.all()
    assert (row.requests, row.cache_hits, row.cache_misses) == (3, 2, 1)


def test_client_and_server_errors_are_counted_apart(ready_model, manage_client, predict_client):
    """A 4xx (the caller's to fix) and a 5xx (the server's: here a full batching queue, 503
    with Retry-After) are both errors; the health thresholds judge only the second."""
    model = ready_model(dense_model(), name="busy", version="1.0.0")
    assert predict(predict_client, model["id"], {"X": [[0.0] * 8]}, skip_cache=True).status_code == 200
    assert predict(predict_client, model["id"], {"X": [[0.0] * 3]}, skip_cache=True).status_code == 400
    # A timeout of 1 µs in the batching queue: no request can be run within it.
    patch = manage_client.patch(
        f"/api/v1/models/{model['id']}",
        {"batching": {"enabled": True, "default_timeout_microseconds": 1}},
        format="json",
    )
    assert patch.status_code == 200, patch.json()
    assert predict(predict_client, model["id"], {"X": [[0.0] * 8]}, skip_cache=True).status_code == 503
    serving_stats.flush()
    (row,) = ServingMinute.objects.all()
    assert (row.requests, row.errors, row.client_errors, row.server_errors) == (3, 2, 1, 1)
    (summary,) = serving_summary(since=timezone.now() - timedelta(hours=1))
    assert (summary["errors"], summary["client_errors"], summary["server_errors"]) == (2, 1, 1)


def test_requests_that_found_no_model_are_not_recorded(iris, predict_client, read_client):
    assert post_body(predict_client, named_predict_url("no-such-model"), '{"input_data": {}}').status_code == 404
    assert predict(read_client, iris["id"], {"X": ROW}).status_code == 403  # no model bound before the scope check
    assert serving_stats.flush() == 0
    assert not ServingMinute.objects.exists()


def test_v2_infer_is_recorded_too(iris, predict_client):
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW[0]}]}
    response = predict_client.post("/v2/models/iris/infer", body, format="json")
    assert response.status_code == 200, response.content
    serving_stats.flush()
    (row,) = ServingMinute.objects.all()
    assert (row.requests, row.cache_misses, row.inferences, row.executions) == (1, 1, 1, 1)


def _minute(model_id, minute, **counts):
    buckets = counts.pop("buckets", {})
    return ServingMinute.objects.create(model_id=model_id, minute=minute, **counts, **buckets)


def test_selectors_compute_the_dashboard_figures_from_the_rows(iris, ready_model):
    other = ready_model(make_iris_model(zipmap=False), name="iris", version="2.0.0")
    now = timezone.now().replace(second=0, microsecond=0)
    # 100 requests of 1.0.0: 50 at most 1 ms, 40 in (1, 2.5], 10 in (2.5, 5]; two minutes.
    _minute(iris["id"], now - timedelta(minutes=5), requests=60, errors=2, client_errors=2, cache_hits=30,
            cache_misses=10, inferences=10, executions=4, buckets={"le_1": 50, "le_2_5": 10})  # fmt: skip
    _minute(iris["id"], now - timedelta(minutes=1), requests=40, errors=1, server_errors=1, cache_hits=10,
            cache_misses=10, inferences=10, executions=1, buckets={"le_2_5": 30, "le_5": 10})  # fmt: skip
    _minute(other["id"], now - timedelta(minutes=2), requests=1, buckets={"le_inf": 1})
    # Outside the window: not counted.
    _minute(iris["id"], now - timedelta(hours=25), requests=1000, errors=1000, buckets={"le_10000": 1000})

    summary = serving_summary(since=now - timedelta(hours=24))
    assert [(row["model_name"], row["model_version"]) for row in summary] == [("iris", "1.0.0"), ("iris", "2.0.0")]
    first, second = summary
    assert str(first["model_id"]) == iris["id"]
    assert (first["requests"], first["errors"], first["client_errors"], first["server_errors"]) == (100, 3, 2, 1)
    assert first["p50_ms"] == 1.0  # the 50th request is the last one of the first bucket
    assert first["p95_ms"] == 3.75  # rank 95: halfway through (2.5, 5]
    assert first["cache_hit_rate"] == 0.6667  # 40 hits of 60 lookups
    assert first["mean_batch_size"] == 4.0  # 20 inferences in 5 runs
    assert second["p50_ms"] == second["p95_ms"] == 10000  # beyond the last bound: its lower edge
    assert second["cache_hit_rate"] is None and second["mean_batch_size"] is None

    histogram = latency_histogram(since=now - timedelta(hours=24), model_id=iris["id"])
    assert [entry["le_ms"] for entry in histogram] == list(LATENCY_BOUNDS_MS)
    counts = {entry["le_ms"]: entry["count"] for entry in histogram}
    assert (counts[1], counts[2.5], counts[5], counts[None]) == (50, 40, 10, 0)
    assert sum(counts.values()) == 100
    assert sum(entry["count"] for entry in latency_histogram(since=now - timedelta(hours=24))) == 101

    series = serving_timeseries(since=now - timedelta(minutes=10), bucket_minutes=5)
    assert [entry["start"] for entry in series] == sorted(entry["start"] for entry in series)
    assert sum(entry["requests"] for entry in series) == 101
    assert sum(entry["errors"] for entry in series) == 3
    assert all(entry["start"].timestamp() % 300 == 0 for entry in series)
    assert series[-1]["start"] <= timezone.now() < series[-1]["start"] + timedelta(minutes=5)
    one = serving_timeseries(since=now - timedelta(minutes=10), bucket_minutes=1, model_id=other["id"])
    assert len(one) in (11, 12)  # every minute, empty ones included
    assert [entry["requests"] for entry in one if entry["requests"]] == [1]
    # Per minute of 1.0.0: p95 and the mean batch size of each minute, None where nothing ran.
    minutes = serving_timeseries(since=now - timedelta(minutes=10), bucket_minutes=1, model_id=iris["id"])
    busy = [entry for entry in minutes if entry["requests"]]
    assert [(entry["client_errors"], entry["server_errors"]) for entry in busy] == [(2, 0), (0, 1)]
    assert [entry["p95_ms"] for entry in busy] == [2.05, 4.5]  # rank 57 of 60 (7th of 10 in (1, 2.5]); 38 of 40
    assert [entry["mean_batch_size"] for entry in busy] == [2.5, 10.0]
    quiet = [entry for entry in minutes if not entry["requests"]]
    assert all(entry["p95_ms"] is None and entry["mean_batch_size"] is None for entry in quiet)


def test_timeseries_refuses_a_bad_bucket_width():
    with pytest.raises(ValueError, match="bucket_minutes"):
        serving_timeseries(since=timezone.now(), bucket_minutes=0)


def test_quantiles_of_empty_and_single_buckets():
    empty = [0] * len(LATENCY_BOUNDS_MS)
    assert quantile_ms(0.5, empty) is None
    one = list(empty)
    one[0] = 4  # four requests of at most 0.25 ms
    assert quantile_ms(0.5, one) == 0.125


def test_cleanup_deletes_minutes_past_retention(iris, settings):
    settings.SERVING_STATS_RETENTION_DAYS = 2
    now = timezone.now().replace(second=0, microsecond=0)
    _minute(iris["id"], now - timedelta(days=3), requests=1)
    _minute(iris["id"], now - timedelta(hours=1), requests=1)
    assert serving_stats_cleanup() == 1
    call_command("cleanup_history")
    assert ServingMinute.objects.count() == 1
