"""Fixtures for the site tests: models registered through the API (tests/inference)."""

from tests.inference.conftest import _cache_per_worker, ready_model, register  # noqa: F401 (fixtures)
