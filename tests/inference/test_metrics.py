"""`GET /metrics` as Prometheus sees it: access, and the counters real requests leave there,
through Django, the WSGI fast path and /v2, and summed over several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from inference.fastpath import PredictFastPath
from jobs.models import Job
from tests.inference.api import predict
from tests.inference.test_batching import dense_model
from tests.inference.test_fastpath import call
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

METRICS = "/metrics"
ROW = [[5.1, 3.5, 1.4, 0.2]]
BASE_DIR = Path(settings.BASE_DIR)


def scrape(client: APIClient) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get(METRICS)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_a_key_with_read(api_client, client_for, read_client):
    anonymous = api_client.get(METRICS)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    wrong_scope = client_for("predict").get(METRICS)
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["code"] == "missing_scope"
    bad_key = APIClient()
    bad_key.credentials(HTTP_AUTHORIZATION="Bearer nope.nope")
    assert bad_key.get(METRICS).status_code == 401
    assert read_client.get(METRICS).status_code == 200


def test_prometheus_text_and_openmetrics_are_negotiated(read_client):
    text = read_client.get(METRICS, HTTP_ACCEPT="text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
    assert text.status_code == 200
    assert text["Content-Type"].startswith("text/plain")
    assert b"# TYPE modelforge_requests_total counter" in text.content
    openmetrics = read_client.get(METRICS, HTTP_ACCEPT="application/openmetrics-text;version=1.0.0")
    assert openmetrics.status_code == 200
    assert openmetrics["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.content.rstrip().endswith(b"# EOF")


def test_predictions_through_django_and_the_fast_path_are_counted(ready_model, predict_client, read_client, make_key):
    model = ready_model(make_iris_model(zipmap=False), name="metrics-iris", version="1.2.0")
    labels = {"model": "metrics-iris", "version": "1.2.0"}
    before = scrape(read_client)

    assert predict(predict_client, model["id"], {"X": ROW}).status_code == 200  # Django: miss, runs
    assert predict(predict_client, model["id"], {"X": ROW}).status_code == 200  # Django: hit
    assert predict(predict_client, model["id"], {"X": [[1.0]]}).status_code == 400  # bad shape
    app = PredictFastPath(get_wsgi_application())
    # The same key as the Django requests: the prediction cache is per key, and the last
    # request is to hit the entry the first one stored.
    key = predict_client._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    body = orjson.dumps({"input_data": {"X": ROW}, "skip_cache": True})
    status, headers, _ = call(app, f"/api/v1/models/{model['id']}/predict", body, key=key)
    assert status == 200  # fast path, no cache lookup, runs
    assert "X-Request-ID" in headers
    body = orjson.dumps({"input_data": {"X": ROW}})
    assert call(app, "/api/v1/models/by-name/metrics-iris/predict", body, key=key)[0] == 200  # fast path: hit

    after = scrape(read_client)

    def delta(name, **extra):
        return value(after, name, **labels, **extra) - value(before, name, **labels, **extra)

    assert delta("modelforge_requests_total", outcome="ok") == 2
    assert delta("modelforge_requests_total", outcome="cached") == 2
    assert delta("modelforge_requests_total", outcome="client_error") == 1
    assert delta("modelforge_requests_total", outcome="server_error") == 0
    assert delta("modelforge_cache_hits_total") == 2
    assert delta("modelforge_cache_misses_total") == 1
    assert delta("modelforge_inferences_total") == 2
    assert delta("modelforge_executions_total") == 2
    assert delta("modelforge_rows_total") == 2
    assert delta("modelforge_request_duration_seconds_count") == 5
    assert delta("modelforge_request_duration_seconds_bucket", le="+Inf") == 5
    assert delta("modelforge_request_duration_seconds_sum") > 0
    assert delta("modelforge_compute_duration_seconds_count") == 2
    assert delta("modelforge_queue_duration_seconds_count") == 2
    assert delta("modelforge_compute_duration_seconds_sum") > 0
    # Cumulative buckets, on the bounds of the per-minute statistics.
    assert value(after, "modelforge_request_duration_seconds_bucket", **labels, le="0.00025") <= value(
        after, "modelforge_request_duration_seconds_bucket", **labels, le="10.0"
    )
    # The session pool of this process holds the model.
    assert value(after, "modelforge_session_pool_sessions") >= 1
    assert value(after, "modelforge_session_pool_bytes") > 0


def test_v2_infer_and_requests_without_a_model_are_counted(ready_model, predict_client, read_client, api_client):
    ready_model(make_iris_model(zipmap=False), name="metrics-v2", version="1.0.0")
    labels = {"model": "metrics-v2", "version": "1.0.0"}
    before = scrape(read_client)
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW[0]}]}
    assert predict_client.post("/v2/models/metrics-v2/infer", body, format="json").status_code == 200
    assert predict_client.post("/v2/models/metrics-v2/infer", body, format="json").status_code == 200
    bad = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP64", "data": ROW[0]}]}
    assert predict_client.post("/v2/models/metrics-v2/infer", bad, format="json").status_code == 400
    assert api_client.post("/v2/models/metrics-v2/infer", body, format="json").status_code == 401
    after = scrape(read_client)

    def delta(name, **extra):
        return value(after, name, **extra) - value(before, name, **extra)

    assert delta("modelforge_requests_total", **labels, outcome="ok") == 1
    assert delta("modelforge_requests_total", **labels, outcome="cached") == 1
    assert delta("modelforge_requests_total", **labels, outcome="client_error") == 1
    assert delta("modelforge_inferences_total", **labels) == 1
    # No key: the model was never looked up, so the request counts without model labels.
    assert delta("modelforge_requests_total", model="", version="", outcome="client_error") == 1


@pytest.mark.django_db(transaction=True)
def test_a_request_refused_for_load_counts_as_rejected(ready_model, manage_client, predict_client, read_client):
    model = ready_model(dense_model(), name="metrics-busy", version="1.0.0")
    # A timeout of 1 µs in the batching queue: no request can be run within it.
    patch = manage_client.patch(
        f"/api/v1/models/{model['id']}",
        {"batching": {"enabled": True, "default_timeout_microseconds": 1}},
        format="json",
    )
    assert patch.status_code == 200, patch.json()
    before = scrape(read_client)
    response = predict(predict_client, model["id"], {"X": [[0.0] * 8]}, skip_cache=True)
    assert response.status_code == 503
    assert response.has_header("Retry-After")
    after = scrape(read_client)
    labels = {"model": "metrics-busy", "version": "1.0.0", "outcome": "rejected"}
    assert (
        value(after, "modelforge_requests_total", **labels) - value(before, "modelforge_requests_total", **labels) == 1
    )


def test_jobs_by_status_and_queue_lengths_are_read_at_scrape_time(ready_model, read_client, settings):
    settings.CELERY_BROKER_URL = ""  # the embedded runner: queued jobs by priority are the queues
    model = ready_model(make_iris_model(zipmap=False), name="metrics-jobs", version="1.0.0")
    common = {"model_id": model["id"], "model_name": "metrics-jobs", "model_version": "1.0.0"}
    Job.objects.create(**common, status=Job.Status.QUEUED, priority=Job.Priority.HIGH)
    Job.objects.create(**common, status=Job.Status.QUEUED, priority=Job.Priority.HIGH)
    Job.objects.create(**common, status=Job.Status.FAILED, priority=Job.Priority.LOW)
    samples = scrape(read_client)
    assert value(samples, "modelforge_jobs", status="queued") == 2
    assert value(samples, "modelforge_jobs", status="failed") == 1
    assert value(samples, "modelforge_jobs", status="running") == 0
    assert ("modelforge_jobs", (("status", "running"),)) in samples  # every status is listed
    assert value(samples, "modelforge_queue_length", queue="high") == 2
    assert value(samples, "modelforge_queue_length", queue="low") == 0
    assert value(samples, "modelforge_broker_up") == 1
    # The server's own threads run the jobs: no Celery workers to count (tests/jobs/test_worker_heartbeats.py).
    assert ("modelforge_workers", ()) not in samples


def test_the_oldest_queued_job_per_queue_is_read_at_scrape_time(ready_model, read_client):
    model = ready_model(make_iris_model(zipmap=False), name="metrics-oldest", version="1.0.0")
    common = {"model_id": model["id"], "model_name": "metrics-oldest", "model_version": "1.0.0"}
    now = timezone.now()
    for minutes in (3, 1):
        Job.objects.create(
            **common, status=Job.Status.QUEUED, priority=Job.Priority.HIGH, enqueued_at=now - timedelta(minutes=minutes)
        )
    # A retry due in a minute is not waiting yet; a running job is not waiting at all.
    Job.objects.create(
        **common, status=Job.Status.QUEUED, priority=Job.Priority.LOW, enqueued_at=now + timedelta(minutes=1)
    )
    Job.objects.create(
        **common, status=Job.Status.RUNNING, priority=Job.Priority.NORMAL, enqueued_at=now - timedelta(hours=1)
    )
    samples = scrape(read_client)
    assert 180 <= value(samples, "modelforge_job_queue_oldest_seconds", queue="high") < 3600
    assert ("modelforge_job_queue_oldest_seconds", (("queue", "normal"),)) in samples
    assert value(samples, "modelforge_job_queue_oldest_seconds", queue="normal") == 0
    assert value(samples, "modelforge_job_queue_oldest_seconds", queue="low") == 0


def test_the_session_pool_cap_is_exported_with_its_size(read_client):
    samples = scrape(read_client)
    assert value(samples, "modelforge_session_pool_max_bytes") == settings.SESSION_POOL_MAX_MEMORY_MB * 1024 * 1024
    assert ("modelforge_session_pool_bytes", ()) in samples


DRIVER = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
from tests.inference.metrics_driver import main
main(sys.argv[1:])
"""


@pytest.mark.e2e
def test_multiprocess_mode_sums_the_processes(tmp_path):
    """Two server processes count into one PROMETHEUS_MULTIPROC_DIR; a scrape in a third
    process reports their sum (what `make serve`'s granian workers do)."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SERVING_STATS_FLUSH_SECONDS": "0",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    keys = orjson.loads(run("setup"))
    run("predict", keys["predict"], "3")
    run("predict", keys["predict"], "4")
    assert len({path.name for path in metrics_dir.glob("counter_*.db")}) >= 2  # one file per process
    samples = parse(run("scrape", keys["read"]))
    labels = {"model": "iris", "version": "1.0.0"}
    assert value(samples, "modelforge_requests_total", **labels, outcome="ok") == 7
    assert value(samples, "modelforge_inferences_total", **labels) == 7
    assert value(samples, "modelforge_executions_total", **labels) == 7
    assert value(samples, "modelforge_request_duration_seconds_count", **labels) == 7
    # The processes have ended: their session pools no longer count.
    assert value(samples, "modelforge_session_pool_sessions") == 0
    # What the processes wrote to the database at exit adds up too.
    assert orjson.loads(run("minutes")) == {"requests": 7, "inferences": 7}


def test_latencies_land_in_their_buckets_and_counts_flush_on_their_own(read_client):
    """Requests add to the process's pending sums; a scrape adds them to the instruments first,
    and so does the process's own flush thread, without a scrape, within FLUSH_SECONDS."""

    from inference import metrics

    label = {"model": "bucketed", "version": "1.0.0"}
    for seconds in (0.0003, 0.004, 20.0):
        metrics.pending.request(("bucketed", "1.0.0"), "ok", None, seconds, None, None)
    samples = scrape(read_client)

    def sample(name: str, **extra: str) -> float:
        return samples.get((name, tuple(sorted({**label, **extra}.items()))), 0.0)

    assert sample("modelforge_request_duration_seconds_bucket", le="0.00025") == 0
    assert sample("modelforge_request_duration_seconds_bucket", le="0.0005") == 1
    assert sample("modelforge_request_duration_seconds_bucket", le="0.005") == 2
    assert sample("modelforge_request_duration_seconds_bucket", le="10.0") == 2
    assert sample("modelforge_request_duration_seconds_bucket", le="+Inf") == 3
    assert sample("modelforge_request_duration_seconds_count") == 3
    assert sample("modelforge_request_duration_seconds_sum") == pytest.approx(20.0043)
    assert sample("modelforge_requests_total", outcome="ok") == 3

    def counted(counter) -> float:  # the instrument alone: collecting it does not flush
        (family,) = counter.collect()
        return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels == label)

    metrics.pending.executed(("bucketed", "1.0.0"), 4, 7)  # no scrape: the flush thread adds it
    deadline = timezone.now() + timedelta(seconds=30)
    while counted(metrics.INFERENCES) < 4:
        assert timezone.now() < deadline, "the pending counts never reached the instruments"
        metrics.pending._wake.wait(0.05)
    assert counted(metrics.ROWS) == 7
    assert counted(metrics.EXECUTIONS) == 1
