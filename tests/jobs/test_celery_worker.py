"""Jobs on real Celery workers: a Redis broker (CELERY_BROKER_URL) and `celery worker`
subprocesses against the test database. Not eager mode: messages go through the broker, and
workers are killed for real. Skipped without a broker (the embedded runner's tests cover the
same services without one)."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs import services
from jobs.models import Job
from jobs.storage import JobFiles
from tests.jobs.api import (
    CELERY_HEALTH,
    create_file,
    create_inline,
    created,
    job_url,
    output_lines,
    result_url,
    wait_finished,
    wait_status,
)
from tests.jobs.conftest import BROKER_URL, NO_BROKER, CeleryStack, point_celery_at
from tests.jobs.factories import csv_bytes, iris_model, iris_rows, jsonl_bytes, reference_outputs, slow_model

pytestmark = [
    pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]


def task_result(job_id: str, timeout: float = 10.0) -> TaskResult:
    """The task's row in django-celery-results: stored just after the task returns, which is a
    moment after the job's own row says it completed."""
    deadline = time.monotonic() + timeout
    while (found := TaskResult.objects.filter(task_id=job_id).first()) is None:
        assert time.monotonic() < deadline, "no task result stored"
        time.sleep(0.05)
    return found


def assert_matches_reference(lines: list[dict], rows: np.ndarray) -> None:
    expected = reference_outputs(iris_model(), {"X": rows})
    assert len(lines) == len(rows)
    assert [line["label"] for line in lines] == expected["label"].tolist()
    np.testing.assert_allclose([line["probabilities"] for line in lines], expected["probabilities"], rtol=1e-5)


def test_job_lifecycle_on_a_worker(celery_worker, jobs_client, make_model):
    iris = make_model(iris_model())
    rows = iris_rows(4)
    response = create_inline(jobs_client, iris, {"X": rows}, priority="high")
    job = created(response)
    assert job["status"] in ("queued", "running", "completed")  # handed to the broker
    assert jobs_client.get(response["Location"]).status_code == 200

    result = wait_finished(jobs_client, job["id"])
    assert result.status_code == 200, result.json()
    expected = reference_outputs(iris_model(), {"X": rows})
    assert result.json()["output_data"]["label"] == expected["label"].tolist()

    detail = jobs_client.get(job_url(job["id"])).json()
    assert (detail["status"], detail["attempts"], detail["worker"]) == ("completed", 1, celery_worker.name)
    assert detail["queue_time_ms"] > 0
    assert detail["inference_time_ms"] >= 0
    stored = Job.objects.get(pk=job["id"])
    assert stored.celery_task_id == job["id"]
    task = task_result(job["id"])  # the task's own result, in the database
    assert (task.status, task.task_name, task.result) == ("SUCCESS", "jobs.run", '"completed"')

    assert jobs_client.delete(job_url(job["id"])).status_code == 204
    assert not TaskResult.objects.filter(task_id=job["id"]).exists()


def test_jsonl_file_of_10000_rows_with_progress_and_output(celery_worker, jobs_client, make_model):
    iris = make_model(iris_model())
    rows = iris_rows(10_000, seed=1)
    job = created(create_file(jobs_client, iris, jsonl_bytes(rows), "big.jsonl"))
    assert job["progress"] == {"done": 0, "total": 10_000}
    seen = wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0 or j["status"] == "completed")
    assert seen["progress"]["done"] % 100 == 0  # saved after every chunk of JOB_CHUNK_ROWS=100
    assert wait_finished(jobs_client, job["id"]).json()["rows"] == 10_000
    assert jobs_client.get(job_url(job["id"])).json()["progress"] == {"done": 10_000, "total": 10_000}
    assert_matches_reference(output_lines(jobs_client, job["id"]), rows)


def test_csv_file_with_output_as_csv(celery_worker, jobs_client, make_model):
    iris = make_model(iris_model())
    rows = iris_rows(2_500, seed=2)
    job = created(create_file(jobs_client, iris, csv_bytes(rows), "rows.csv", priority="low"))
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    response = jobs_client.get(result_url(job["id"], format="csv"))
    header, *lines = b"".join(response.streaming_content).decode().splitlines()
    assert header == "label,probabilities_0,probabilities_1,probabilities_2"
    expected = reference_outputs(iris_model(), {"X": rows})
    assert [int(line.split(",")[0]) for line in lines] == expected["label"].tolist()
    assert_matches_reference(output_lines(jobs_client, job["id"]), rows)


def test_high_priority_job_queued_after_low_ones_runs_first(celery_worker, jobs_client, make_model):
    slow = make_model(slow_model(), name="slow")
    iris = make_model(iris_model(), name="iris")
    busy = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(1_500)), "busy.jsonl"))
    wait_status(jobs_client, busy["id"], lambda job: job["status"] == "running")
    queued = [
        created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}, priority=priority))["id"]
        for priority in ("low", "low", "normal", "high")
    ]
    assert Job.objects.get(pk=busy["id"]).status == Job.Status.RUNNING  # the worker was busy throughout
    for job_id in [busy["id"], *queued]:
        assert wait_finished(jobs_client, job_id).status_code == 200
    started = {str(job.pk): job.started_at for job in Job.objects.all()}
    assert sorted(queued, key=started.get) == [queued[3], queued[2], queued[0], queued[1]]


def test_cancel_before_the_run(celery_worker, jobs_client, make_model):
    slow = make_model(slow_model(), name="slow")
    busy = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(800)), "busy.jsonl"))
    wait_status(jobs_client, busy["id"], lambda job: job["status"] == "running")
    waiting = created(create_inline(jobs_client, slow, {"X": [[1, 2, 3, 4]]}))
    assert jobs_client.post(f"{job_url(waiting['id'])}/cancel").json()["status"] == "cancelled"
    assert wait_finished(jobs_client, busy["id"]).status_code == 200
    after = created(create_inline(jobs_client, slow, {"X": [[1, 2, 3, 4]]}))
    assert wait_finished(jobs_client, after["id"]).status_code == 200  # the worker got past it
    job = Job.objects.get(pk=waiting["id"])
    assert (job.status, job.attempts, job.started_at) == (Job.Status.CANCELLED, 0, None)


def test_cancel_during_the_run_revokes_and_stops_it(celery_worker, jobs_client, make_model):
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(3_000)), "rows.jsonl"))
    wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0)
    cancelled_at = time.monotonic()
    assert jobs_client.post(f"{job_url(job['id'])}/cancel").json()["status"] == "cancelled"
    # The worker is free again long before the 30 chunks would have taken.
    quick = created(create_inline(jobs_client, make_model(iris_model(), name="iris"), {"X": [[1, 2, 3, 4]]}))
    assert wait_finished(jobs_client, quick["id"]).status_code == 200
    assert time.monotonic() - cancelled_at < 10
    stopped = Job.objects.get(pk=job["id"])
    assert (stopped.status, stopped.output_file) == (Job.Status.CANCELLED, "")
    assert stopped.progress_done < 3_000
    assert jobs_client.get(result_url(job["id"])).json()["code"] == "job_cancelled"


def test_bad_row_fails_the_job_at_once(celery_worker, jobs_client, make_model):
    iris = make_model(iris_model())
    lines = jsonl_bytes(iris_rows(3_000)).splitlines(keepends=True)
    lines[2_344] = b'{"X": [5.1, 3.5, 1.4]}\n'
    job = created(create_file(jobs_client, iris, b"".join(lines), "rows.jsonl"))
    response = wait_finished(jobs_client, job["id"])
    assert (response.status_code, response.json()["error_code"]) == (409, "invalid_row")
    failed = Job.objects.get(pk=job["id"])
    assert failed.error_message.startswith("Row 2345: Input 'X' expects shape [4]")
    assert failed.attempts == 1
    assert not list(JobFiles(failed.pk).folder.glob("output-*"))


def test_wait_returns_as_soon_as_the_job_ends(celery_worker, jobs_client, make_model):
    """About 2 s of work: by then the waiter's own re-reads are 1.6-2 s apart, so an answer
    within a fraction of a second comes from the worker's notification (Redis pub/sub)."""
    slow = make_model(slow_model(), name="slow")
    job = created(create_file(jobs_client, slow, jsonl_bytes(iris_rows(2_000)), "rows.jsonl"))
    started = time.monotonic()
    response = jobs_client.get(result_url(job["id"], wait=25))
    answered = timezone.now()
    assert response.status_code == 200
    finished = datetime.fromisoformat(response.json()["finished_at"].replace("Z", "+00:00"))
    assert (answered - finished).total_seconds() < 0.75
    assert time.monotonic() - started < 20


def test_job_created_while_the_broker_is_down_runs_once_it_is_back(
    celery_worker, celery_stack, jobs_client, make_model, settings
):
    iris = make_model(iris_model())
    point_celery_at("redis://127.0.0.1:1/0", celery_stack.prefix, settings)  # nothing listens on port 1
    try:
        job = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))
    finally:
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
    assert job["status"] == "pending"  # accepted and stored; not handed over
    time.sleep(1)
    assert Job.objects.get(pk=job["id"]).status == Job.Status.PENDING
    later = timezone.now() + timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS + 1)
    assert services.jobs_sweep(now=later)["enqueued"] == 1  # what beat runs every minute
    assert wait_finished(jobs_client, job["id"]).status_code == 200
    assert Job.objects.get(pk=job["id"]).attempts == 1


def test_killed_pool_process_job_is_redelivered_and_completes_once(celery_worker, jobs_client, make_model):
    slow = make_model(slow_model(), name="slow")
    rows = iris_rows(1_000)
    job = created(create_file(jobs_client, slow, jsonl_bytes(rows), "rows.jsonl"))
    wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0)
    for pid in celery_worker.pool_pids():
        os.kill(pid, signal.SIGKILL)  # the task's process dies; the worker requeues the message
    result = wait_finished(jobs_client, job["id"])
    assert result.status_code == 200, result.json()
    _assert_completed_once(jobs_client, job["id"], rows, attempts=2)


def test_killed_worker_job_is_redelivered_to_another_and_completes_once(
    celery_stack, jobs_client, make_model, settings
):
    """The whole worker dies (SIGKILL, as in a crash): its unacknowledged message goes back to
    the queue after the visibility timeout, and another worker finishes the job, once."""
    stack = CeleryStack(celery_stack.root / "crash")  # its own namespace: no other worker takes it
    stack.configure(settings)
    limits = {
        "JOB_SOFT_TIME_LIMIT_SECONDS": "4",
        "JOB_TIME_LIMIT_SECONDS": "5",
        "JOB_VISIBILITY_TIMEOUT_SECONDS": "6",
        "JOB_STUCK_AFTER_SECONDS": "60",
    }
    try:
        first = stack.start_worker(f"first-{os.getpid()}", **limits)
        slow = make_model(slow_model(), name="slow")
        rows = iris_rows(1_000)
        job = created(create_file(jobs_client, slow, jsonl_bytes(rows), "rows.jsonl"))
        wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0)
        first.kill()
        lost = Job.objects.get(pk=job["id"])
        assert (lost.status, lost.attempts) == (Job.Status.RUNNING, 1)
        # Redis hands the message out again once the visibility timeout has passed.
        time.sleep(max(0.0, (lost.started_at + timedelta(seconds=6.5) - timezone.now()).total_seconds()))
        second = stack.start_worker(f"second-{os.getpid()}", **limits)
        result = wait_finished(jobs_client, job["id"])
        assert result.status_code == 200, result.json()
        _assert_completed_once(jobs_client, job["id"], rows, attempts=2)
        assert Job.objects.get(pk=job["id"]).worker == second.name
    finally:
        stack.stop()
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)


def _assert_completed_once(client, job_id: str, rows: np.ndarray, *, attempts: int) -> None:
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (Job.Status.COMPLETED, attempts)
    assert job.output_file == f"output-{attempts}.jsonl"
    assert [path.name for path in JobFiles(job_id).folder.glob("output-*")] == [job.output_file]
    expected = reference_outputs(slow_model(), {"X": rows})["Y"]
    lines = output_lines(client, job_id)
    np.testing.assert_allclose([line["Y"] for line in lines], expected, rtol=1e-5)
    assert task_result(job_id).status == "SUCCESS"
    assert TaskResult.objects.filter(task_id=job_id).count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="drops the worker's PostgreSQL connection")
def test_transient_database_error_is_retried_with_backoff(celery_worker, jobs_client, make_model):
    slow = make_model(slow_model(), name="slow")
    rows = iris_rows(1_000)
    job = created(create_file(jobs_client, slow, jsonl_bytes(rows), "rows.jsonl"))
    wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0)
    with connection.cursor() as cursor:  # every connection to the test database but this one
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    result = wait_finished(jobs_client, job["id"])
    assert result.status_code == 200, result.json()
    _assert_completed_once(jobs_client, job["id"], rows, attempts=2)


def test_celery_health_reports_workers_and_queues(celery_worker, celery_stack, read_client, settings):
    body = read_client.get(CELERY_HEALTH).json()
    assert (body["mode"], body["status"], body["broker"]["ok"]) == ("celery", "healthy", True)
    assert celery_worker.name in [worker["name"] for worker in body["workers"]]
    assert body["queues"] == [{"name": name, "length": 0} for name in ("high", "normal", "low")]
    point_celery_at("redis://127.0.0.1:1/0", celery_stack.prefix, settings)
    try:
        response = read_client.get(CELERY_HEALTH)
    finally:
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
    assert response.status_code == 503
    assert response.json()["broker"]["ok"] is False


def test_queue_lengths_count_waiting_messages(celery_stack, read_client, jobs_client, make_model, settings):
    """With no worker in this namespace, published jobs wait in their priority's queue."""
    stack = CeleryStack(celery_stack.root / "idle")
    stack.configure(settings)
    try:
        iris = make_model(iris_model())
        for priority in ("high", "low", "low"):
            created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}, priority=priority))
        body = read_client.get(CELERY_HEALTH)
        assert body.status_code == 503  # no worker answers
        assert body.json()["queues"] == [
            {"name": "high", "length": 1},
            {"name": "normal", "length": 0},
            {"name": "low", "length": 2},
        ]
        assert body.json()["jobs"]["queued"] == 3
    finally:
        stack.stop()  # drops its queues
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
