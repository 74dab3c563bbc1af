"""Fixtures for the fuzz tests: the job fixtures (the embedded runner, job files in the test's
folder), so that fuzzed job creations run in this process and leave nothing behind."""

from __future__ import annotations

from tests.inference.conftest import _cache_per_worker  # noqa: F401 (fixtures)
from tests.jobs.conftest import _jobs, make_model  # noqa: F401 (fixtures)
