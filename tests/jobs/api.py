"""Calling the jobs API from tests: URLs, job creation with exact bodies, waiting, downloads."""

from __future__ import annotations

import time
from typing import Any

import orjson
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

JOBS = "/api/v1/jobs"
CELERY_HEALTH = "/api/v1/health/celery"


def job_url(job_id: str) -> str:
    return f"{JOBS}/{job_id}"


def result_url(job_id: str, **params: Any) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{JOBS}/{job_id}/result" + (f"?{query}" if query else "")


def create_inline(client: APIClient, model, input_data: Any, **fields: Any):
    """POST a JSON job for a model (an MLModel or its id); numpy arrays allowed in input_data."""
    body = {"model_id": str(getattr(model, "pk", model)), "input_data": input_data, **fields}
    return client.generic(
        "POST", JOBS, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), content_type="application/json"
    )


def create_file(client: APIClient, model, content: bytes, filename: str, **fields: Any):
    """POST a multipart job with ``content`` as its input_file."""
    upload = SimpleUploadedFile(filename, content, content_type="application/octet-stream")
    data = {"model_id": str(getattr(model, "pk", model)), "input_file": upload, **fields}
    return client.post(JOBS, data, format="multipart")


def created(response) -> dict:
    assert response.status_code == 202, response.content[:2000]
    return response.json()


def wait_finished(client: APIClient, job_id: str, *, timeout: float = 60.0):
    """GET the result with ?wait until the job is no longer pending, queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        response = client.get(result_url(job_id, wait=max(1, min(30, int(left)))))
        if response.status_code != 202 or left <= 0:
            return response
        time.sleep(0.05)


def wait_status(client: APIClient, job_id: str, predicate, *, timeout: float = 30.0) -> dict:
    """Poll the job until ``predicate(job)`` holds (e.g. running with some progress)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(job_url(job_id)).json()
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"timed out; the job is {job}"
        time.sleep(0.05)


def output_lines(client: APIClient, job_id: str) -> list[dict]:
    response = client.get(result_url(job_id, format="jsonl"))
    assert response.status_code == 200, response
    assert response["Content-Type"] == "application/x-ndjson"
    return [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()]
