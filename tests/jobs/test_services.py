"""The job services on their own: claiming (at-least-once delivery made idempotent), results
written once, failure classification and retries, the sweeper and retention."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from django_celery_results.models import TaskResult

from core.tensor_checks import InvalidInput
from jobs import services
from jobs.errors import BadRow
from jobs.models import Job
from jobs.storage import JobFiles
from tests.jobs.factories import iris_model, iris_rows, jsonl_bytes, uploaded_input

pytestmark = pytest.mark.django_db


@pytest.fixture
def iris(make_model):
    return make_model(iris_model())


@pytest.fixture
def new_job(iris, make_key):
    api_key, _ = make_key("predict")

    def _new(**fields) -> Job:
        job = services.job_create(model=iris, input_data={"X": [[5.1, 3.5, 1.4, 0.2]]}, api_key=api_key)
        if fields:
            Job.objects.filter(pk=job.pk).update(**fields)
            job.refresh_from_db()
        return job

    return _new


def test_claim_moves_a_queued_job_to_running_once(new_job):
    job = new_job(status=Job.Status.QUEUED)
    claimed = services.job_claim(job_id=job.pk, worker="w1")
    assert (claimed.status, claimed.attempts, claimed.worker) == ("running", 1, "w1")
    assert claimed.queue_time_ms >= 0
    assert services.job_claim(job_id=job.pk, worker="w2") is None  # a duplicate message
    assert Job.objects.get(pk=job.pk).worker == "w1"


def test_redelivered_message_takes_over_and_the_lost_run_writes_nothing(new_job):
    job = new_job(status=Job.Status.QUEUED)
    lost = services.job_claim(job_id=job.pk, worker="w1")
    taken = services.job_claim(job_id=job.pk, worker="w2", redelivered=True)
    assert (taken.attempts, taken.worker) == (2, "w2")
    with pytest.raises(services.JobSuperseded):
        services.job_execute(job=lost)  # its result would not be written
    services.job_execute(job=taken)
    done = Job.objects.get(pk=job.pk)
    assert (done.status, done.attempts, done.worker) == ("completed", 2, "w2")
    first_result = done.output_data
    # A late redelivery of a finished job does nothing at all.
    assert services.job_claim(job_id=job.pk, worker="w3", redelivered=True) is None
    assert Job.objects.get(pk=job.pk).output_data == first_result


def test_claim_ignores_finished_cancelled_and_deleted_jobs(new_job):
    for status in (Job.Status.COMPLETED, Job.Status.FAILED, Job.Status.CANCELLED):
        job = new_job(status=status, output_data={"label": [0]})
        assert services.job_claim(job_id=job.pk, worker="w", redelivered=True) is None
        assert Job.objects.get(pk=job.pk).status == status
    assert services.job_claim(job_id=uuid.uuid4(), worker="w") is None


def test_a_job_that_keeps_losing_its_worker_fails_after_max_attempts(new_job, settings):
    settings.JOB_MAX_ATTEMPTS = 3
    job = new_job(status=Job.Status.RUNNING, attempts=3)
    assert services.job_claim(job_id=job.pk, worker="w", redelivered=True) is None
    failed = Job.objects.get(pk=job.pk)
    assert (failed.status, failed.error_code) == ("failed", "attempts_exhausted")


def test_transient_error_requeues_with_exponential_backoff(new_job, settings):
    settings.JOB_RETRY_BACKOFF_SECONDS = 2
    settings.JOB_MAX_ATTEMPTS = 3
    job = new_job(status=Job.Status.QUEUED)
    delays = []
    for _ in range(2):
        claimed = services.job_claim(job_id=job.pk, worker="w")
        delays.append(services.job_record_failure(job=claimed, exc=OperationalError("server closed the connection")))
        requeued = Job.objects.get(pk=job.pk)
        assert requeued.status == Job.Status.QUEUED
        assert "retrying in" in requeued.error_message
    assert delays == [2, 4]
    claimed = services.job_claim(job_id=job.pk, worker="w")
    assert services.job_record_failure(job=claimed, exc=OperationalError("again")) is None
    failed = Job.objects.get(pk=job.pk)
    assert (failed.status, failed.attempts, failed.error_code) == ("failed", 3, "attempts_exhausted")
    assert "OperationalError: again" in failed.error_message
    assert failed.traceback


@pytest.mark.parametrize(
    ("exc", "code", "has_traceback"),
    [
        (InvalidInput("Input 'X' is bad.", code="invalid_shape"), "invalid_shape", False),
        (BadRow(7, "Input 'X' is bad.", rule="invalid_shape"), "invalid_row", False),
        (services.JobTimeLimit(), "time_limit_exceeded", False),
        (ZeroDivisionError("division by zero"), "internal_error", True),
    ],
)
def test_other_errors_fail_at_once(new_job, exc, code, has_traceback):
    claimed = services.job_claim(job_id=new_job(status=Job.Status.QUEUED).pk, worker="w")
    try:
        raise exc
    except Exception as raised:
        assert services.job_record_failure(job=claimed, exc=raised) is None
    failed = Job.objects.get(pk=claimed.pk)
    assert (failed.status, failed.attempts, failed.error_code) == ("failed", 1, code)
    assert bool(failed.traceback) == has_traceback
    assert failed.finished_at is not None


def test_failure_of_a_superseded_run_is_not_recorded(new_job):
    job = new_job(status=Job.Status.QUEUED)
    lost = services.job_claim(job_id=job.pk, worker="w1")
    services.job_cancel(job=lost)
    assert services.job_record_failure(job=lost, exc=OperationalError("x")) is None
    assert Job.objects.get(pk=job.pk).status == Job.Status.CANCELLED


def test_status_moves_outside_the_machine_are_refused():
    with pytest.raises(ValueError, match="cannot go from completed to running"):
        services._move(uuid.uuid4(), source=Job.Status.COMPLETED, target=Job.Status.RUNNING)


# --- the sweeper ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sweeper_queues_jobs_the_broker_never_got(new_job, settings):
    job = new_job()  # queued with the embedded runner...
    from core.embedded_runner import runner

    assert runner.wait_idle(timeout=10)
    # ...now pretend its hand-over failed: still pending, long ago.
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.PENDING, attempts=0, output_data=None, finished_at=None, enqueued_at=None
    )
    assert services.jobs_sweep()["enqueued"] == 0  # too recent: the hand-over may be under way
    later = timezone.now() + timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS + 1)
    assert services.jobs_sweep(now=later)["enqueued"] == 1
    assert runner.wait_idle(timeout=10)
    assert Job.objects.get(pk=job.pk).status == Job.Status.COMPLETED


def test_sweeper_fails_jobs_running_past_the_limit(new_job, settings):
    started = timezone.now() - timedelta(seconds=settings.JOB_STUCK_AFTER_SECONDS + 5)
    stuck = new_job(status=Job.Status.RUNNING, attempts=1, started_at=started)
    fresh = new_job(status=Job.Status.RUNNING, attempts=1, started_at=timezone.now())
    assert services.jobs_sweep()["failed"] == 1
    failed = Job.objects.get(pk=stuck.pk)
    assert (failed.status, failed.error_code) == ("failed", "worker_lost")
    assert Job.objects.get(pk=fresh.pk).status == Job.Status.RUNNING


def test_sweeper_sends_stale_queued_jobs_again(new_job, settings, django_capture_on_commit_callbacks):
    old = timezone.now() - timedelta(seconds=settings.JOB_REQUEUE_AFTER_SECONDS + 5)
    stale = new_job(status=Job.Status.QUEUED, enqueued_at=old)
    recent = new_job(status=Job.Status.QUEUED, enqueued_at=timezone.now())
    assert services.jobs_sweep()["requeued"] == 1
    assert Job.objects.get(pk=stale.pk).enqueued_at > old
    assert Job.objects.get(pk=recent.pk).status == Job.Status.QUEUED


# --- retention ----------------------------------------------------------------------------


def test_cleanup_deletes_old_finished_jobs_files_and_results(
    iris, make_key, settings, django_capture_on_commit_callbacks
):
    api_key, _ = make_key("predict")

    def file_job(status: str, days_ago: float) -> Job:
        upload = uploaded_input(jsonl_bytes(iris_rows(3)))
        job = services.job_create(model=iris, input_file=upload, api_key=api_key)
        Job.objects.filter(pk=job.pk).update(
            status=status, output_file="output-1.jsonl", finished_at=timezone.now() - timedelta(days=days_ago)
        )
        TaskResult.objects.create(task_id=str(job.pk), status="SUCCESS")
        return job

    settings.JOB_RETENTION_DAYS = 7
    expired = file_job(Job.Status.COMPLETED, 8)
    failed = file_job(Job.Status.FAILED, 30)
    recent = file_job(Job.Status.COMPLETED, 1)
    active = file_job(Job.Status.RUNNING, 30)  # never deleted while running
    orphan = JobFiles(uuid.uuid4()).folder  # files of a job whose row was never written
    orphan.mkdir(parents=True)
    (orphan / "input.jsonl").write_bytes(b"{}\n")
    month_ago = time.time() - 30 * 86400
    os.utime(orphan, (month_ago, month_ago))

    report = services.jobs_cleanup()
    assert report == {"jobs": 2, "orphan_folders": 1}
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, active.pk}
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {str(recent.pk), str(active.pk)}
    assert not JobFiles(expired.pk).folder.exists()
    assert not JobFiles(failed.pk).folder.exists()
    assert JobFiles(recent.pk).folder.exists()
    assert JobFiles(active.pk).folder.exists()
    assert not orphan.exists()
