"""The inference tests' fixtures: a predict client and models registered through the API."""

from tests.inference.conftest import _cache_per_worker, predict_client, ready_model, register  # noqa: F401
