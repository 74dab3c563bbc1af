"""The worker killed mid-job (REFERENCE §2, §5): the job is redelivered and completes exactly
once, the jobs queued behind it run too, and the API keeps answering predictions meanwhile."""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.jobs_checks import assert_completed_once
from tests.jobs.api import create_file, created, wait_finished, wait_status
from tests.jobs.conftest import BROKER_URL, NO_BROKER
from tests.jobs.factories import iris_model, iris_rows, jsonl_bytes, slow_model
from tests.security.battery import assert_still_serves, via_fastpath

pytestmark = [
    pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]


def test_worker_killed_mid_job_completes_it_exactly_once(celery_worker, jobs_client, make_model, ready_model, make_key):
    slow = make_model(slow_model(), name="slow")
    iris = make_model(iris_model(), name="iris")
    serving = ready_model(iris_model(), name="served")
    key = make_key("predict")[1]
    slow_rows, iris_rows_ = iris_rows(600), iris_rows(50, seed=1)
    first = created(create_file(jobs_client, slow, jsonl_bytes(slow_rows), "rows.jsonl"))
    behind = created(create_file(jobs_client, iris, jsonl_bytes(iris_rows_), "rows.jsonl"))
    wait_status(jobs_client, first["id"], lambda job: job["progress"]["done"] > 0)

    for pid in celery_worker.pool_pids():
        os.kill(pid, signal.SIGKILL)  # the process running the task dies mid-run
    assert_still_serves(via_fastpath, serving["id"], key)

    for job in (first, behind):
        result = wait_finished(jobs_client, job["id"], timeout=120)
        assert result.status_code == 200, result.content[:300]
    assert_completed_once(jobs_client, first["id"], slow_model(), slow_rows, "Y", attempts=2)
    assert_completed_once(jobs_client, behind["id"], iris_model(), iris_rows_, "label", attempts=1)
    assert_still_serves(via_fastpath, serving["id"], key)
