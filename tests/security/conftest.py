"""Fixtures for the security battery: model registration through the API (shared with the
inference tests) and the job fixtures (the embedded runner, two clients)."""

from __future__ import annotations

from tests.inference.conftest import _cache_per_worker, ready_model, register  # noqa: F401 (fixtures)
from tests.jobs.conftest import _jobs, jobs_client, make_model, other_client  # noqa: F401 (fixtures)
