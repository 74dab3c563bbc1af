"""A Celery worker stopped with SIGTERM (warm shutdown, what `docker stop` and Kubernetes
send) finishes the job it is running, once, and leaves queued jobs in the broker for the next
worker. Real workers and broker, as in test_celery_worker.py."""

from __future__ import annotations

import os
import signal

import pytest

from jobs.models import Job
from tests.jobs.api import create_file, create_inline, created, wait_finished, wait_status
from tests.jobs.conftest import BROKER_URL, NO_BROKER, CeleryStack, point_celery_at
from tests.jobs.factories import iris_model, iris_rows, jsonl_bytes, slow_model
from tests.jobs.test_celery_worker import _assert_completed_once

pytestmark = [
    pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]


def test_sigterm_lets_the_running_job_complete_once_and_keeps_the_queue(
    celery_stack, jobs_client, make_model, settings
):
    stack = CeleryStack(celery_stack.root / "warm")  # its own namespace: no other worker takes its jobs
    stack.configure(settings)
    try:
        first = stack.start_worker(f"warm-{os.getpid()}")
        slow = make_model(slow_model(), name="slow")
        iris = make_model(iris_model(), name="iris")
        # 60 chunks of ~35-80 ms: seconds of work, so the job is still running when the test,
        # starved of CPU by the other test worker, gets to the signal (15 chunks were not enough).
        rows = iris_rows(6_000)
        running = created(create_file(jobs_client, slow, jsonl_bytes(rows), "rows.jsonl"))
        wait_status(jobs_client, running["id"], lambda job: job["progress"]["done"] > 0)
        waiting = created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]}))

        assert Job.objects.get(pk=running["id"]).status == Job.Status.RUNNING  # mid-run at the signal
        os.kill(first.process.pid, signal.SIGTERM)  # the main process: Celery's warm shutdown
        first.process.wait(timeout=120)
        assert "warm shutdown" in first.log().lower()

        # The running job was finished before the worker left, in its first attempt.
        _assert_completed_once(jobs_client, running["id"], rows, attempts=1)
        assert Job.objects.get(pk=running["id"]).worker == first.name
        # The queued one was never taken: it waits in the broker for the next worker.
        assert Job.objects.get(pk=waiting["id"]).status == Job.Status.QUEUED

        second = stack.start_worker(f"after-{os.getpid()}")
        assert wait_finished(jobs_client, waiting["id"]).status_code == 200
        done = Job.objects.get(pk=waiting["id"])
        assert (done.status, done.attempts, done.worker) == (Job.Status.COMPLETED, 1, second.name)
    finally:
        stack.stop()
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
