"""A job whose session run passes INFERENCE_TIMEOUT_SECONDS fails with `inference_timeout`,
and the runner goes on with the next job (embedded runner; the Celery worker runs the same
service)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.models import Job
from tests.inference.slow_models import make_sleepy_model
from tests.jobs.api import create_file, create_inline, created, wait_finished
from tests.jobs.factories import jsonl_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_past_the_inference_timeout_fails_and_the_next_one_runs(jobs_client, make_model, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    sleepy = make_model(make_sleepy_model(), name="sleepy")
    job = created(create_inline(jobs_client, sleepy, {"X": [[1.0, 1.0, 1.0, 1.0]]}))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 409
    assert response.json()["error_code"] == "inference_timeout"
    failed = Job.objects.get(pk=job["id"])
    assert (failed.status, failed.error_code, failed.attempts) == (Job.Status.FAILED, "inference_timeout", 1)
    assert "INFERENCE_TIMEOUT_SECONDS" in failed.error_message

    rows = np.zeros((3, 4), dtype=np.float32)
    quick = created(create_file(jobs_client, sleepy, jsonl_bytes(rows), "rows.jsonl"))
    assert wait_finished(jobs_client, quick["id"]).status_code == 200


def test_a_batch_job_chunk_past_the_timeout_fails_the_job(jobs_client, make_model, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    sleepy = make_model(make_sleepy_model(), name="sleepy")
    rows = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    job = created(create_file(jobs_client, sleepy, jsonl_bytes(rows), "rows.jsonl"))
    response = wait_finished(jobs_client, job["id"])
    assert (response.status_code, response.json()["error_code"]) == (409, "inference_timeout")
