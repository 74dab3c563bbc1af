"""The broker down when jobs are created (REFERENCE §2, §5): each create is still accepted
(202, stored as pending), predictions keep answering, and once the broker is back the sweeper
hands every job over and each runs exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import Job
from tests.faults.jobs_checks import assert_completed_once
from tests.jobs.api import create_inline, created, wait_finished
from tests.jobs.conftest import BROKER_URL, NO_BROKER, point_celery_at
from tests.jobs.factories import iris_model, iris_rows
from tests.security.battery import assert_still_serves, via_django

pytestmark = [
    pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]

DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_jobs_created_while_the_broker_is_down_run_once_it_is_back(
    celery_worker, celery_stack, jobs_client, make_model, ready_model, make_key, settings
):
    iris = make_model(iris_model())
    serving = ready_model(iris_model(), name="served")
    key = make_key("predict")[1]
    rows = [iris_rows(3, seed=seed) for seed in range(3)]
    point_celery_at(DEAD_BROKER, celery_stack.prefix, settings)
    try:
        jobs = [created(create_inline(jobs_client, iris, {"X": batch})) for batch in rows]
        assert_still_serves(via_django, serving["id"], key)
    finally:
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
    assert [job["status"] for job in jobs] == ["pending"] * 3  # accepted and stored, not handed over
    assert Job.objects.filter(status=Job.Status.PENDING).count() == 3

    later = timezone.now() + timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS + 1)
    assert services.jobs_sweep(now=later)["enqueued"] == 3  # what beat runs every minute
    for job, batch in zip(jobs, rows, strict=True):
        result = wait_finished(jobs_client, job["id"])
        assert result.status_code == 200, result.content[:300]
        assert_completed_once(jobs_client, job["id"], iris_model(), batch, "label", attempts=1)
    # A second sweep finds nothing left to hand over: no job runs twice.
    assert services.jobs_sweep(now=later + timedelta(minutes=1))["enqueued"] == 0
