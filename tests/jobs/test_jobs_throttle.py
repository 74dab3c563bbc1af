"""Job creation is throttled per key (THROTTLE_RATE_JOBS): the request past the rate is 429
`throttled` with Retry-After and creates nothing; reading jobs is not throttled."""

from __future__ import annotations

import pytest

from jobs.models import Job
from tests.jobs.api import create_inline, created, wait_finished
from tests.jobs.factories import iris_model
from tests.redis_databases import redis_database_per_worker  # noqa: F401 (a Redis database per test worker)

pytestmark = pytest.mark.django_db(transaction=True)


def test_job_creation_past_the_rate_is_429(jobs_client, other_client, make_model, settings):
    settings.THROTTLE_RATES = {"predict": "", "upload": "", "jobs": "2/min"}
    iris = make_model(iris_model())
    jobs = [created(create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]})) for _ in range(2)]
    refused = create_inline(jobs_client, iris, {"X": [[1, 2, 3, 4]]})
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert int(refused["Retry-After"]) >= 1
    assert Job.objects.count() == 2
    for job in jobs:
        assert wait_finished(jobs_client, job["id"]).status_code == 200  # reads go on
    assert created(create_inline(other_client, iris, {"X": [[1, 2, 3, 4]]}))  # another key's budget
