"""Fixtures for the inference tests: a predict client, and models registered through the API."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.inference.api import MODELS

# Redis has 16 databases; the CI settings use 0 (cache) and 1 (Celery broker).
_FIRST_WORKER_DB = 2
_REDIS_DATABASES = 16


@pytest.fixture(autouse=True)
def _cache_per_worker(settings, worker_id):
    """With Redis, each pytest-xdist worker caches in its own Redis database.

    The workers would otherwise share one: every test's teardown flushes the whole database
    (tests/conftest.py), which would drop another worker's entries between its MISS and its
    HIT, and the hit and miss counters would add up both workers' predictions. It is still
    the Redis backend from settings, only the database number differs. Local memory caches
    are per process already.
    """
    if not settings.REDIS_URL:
        yield
        return
    from django.core.cache import cache

    index = 0 if worker_id == "master" else int(worker_id.removeprefix("gw"))
    database = _FIRST_WORKER_DB + index % (_REDIS_DATABASES - _FIRST_WORKER_DB)
    url = urlsplit(settings.REDIS_URL)
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["LOCATION"] = urlunsplit(url._replace(path=f"/{database}"))
    settings.CACHES = caches  # Django resets its cache connections on this change
    cache.clear()  # leftovers of an earlier run
    yield


@pytest.fixture
def predict_client(client_for):
    """A key with the read and predict scopes."""
    return client_for("read", "predict", name="predictor")


@pytest.fixture
def register(manage_client):
    """register(data, name=..., version=...) -> the model as the API returns it after a
    multipart create (202: upload and validation, which tests run at once: see
    tests/conftest.py), whatever status it ends in."""

    def _register(data: bytes, *, name: str = "model", version: str = "1.0.0") -> dict:
        upload = SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")
        response = manage_client.post(MODELS, {"name": name, "version": version, "file": upload}, format="multipart")
        assert response.status_code == 202, response.json()
        return response.json()

    return _register


@pytest.fixture
def ready_model(register):
    """ready_model(data, name=..., version=...) -> a model registered through the API and ready."""

    def _ready(data: bytes, *, name: str = "model", version: str = "1.0.0") -> dict:
        body = register(data, name=name, version=version)
        assert body["status"] == "ready", body
        return body

    return _ready
