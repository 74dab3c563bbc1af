"""Fixtures for the fault battery: model registration through the API, job fixtures and the
real Celery workers of tests/jobs (subprocesses against the real broker and database)."""

from __future__ import annotations

from tests.inference.conftest import _cache_per_worker, ready_model, register  # noqa: F401 (fixtures)
from tests.jobs.conftest import (  # noqa: F401 (fixtures)
    _jobs,
    celery_stack,
    celery_worker,
    jobs_client,
    make_model,
    other_client,
)
