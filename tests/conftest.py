"""Shared fixtures: API clients with keys of each scope, a staff user, isolated model storage."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from access.models import APIKey


@pytest.fixture(autouse=True)
def model_storage(settings, tmp_path, request) -> Path:
    """Every test gets its own model store (and upload temp folder beside it). A test with the
    database finds in it this deployment's sentinel, as `migrate` writes it (registry.sentinel)."""
    from registry.sentinel import sentinel_write, verdicts

    root = tmp_path / "models"
    (root / "tmp").mkdir(parents=True)
    settings.MODEL_STORAGE_PATH = root
    settings.FILE_UPLOAD_TEMP_DIR = str(root / "tmp")
    verdicts.forget()
    if request.node.get_closest_marker("django_db") is not None:
        request.getfixturevalue("_django_db_helper")  # what pytest-django's marker does: the database, now
        sentinel_write()
    return root


@pytest.fixture(autouse=True)
def _inference_state(settings):
    """No background history or serving statistics writer in tests (it could not see the
    test's transaction); tests flush the buffers themselves. Every test starts with an empty session pool."""
    from inference.history import history
    from inference.serving_stats import serving_stats
    from inference.sessions import get_pool

    settings.HISTORY_FLUSH_INTERVAL_SECONDS = 0
    settings.SERVING_STATS_FLUSH_SECONDS = 0
    get_pool().clear()
    serving_stats.discard()
    yield
    history.discard()
    serving_stats.discard()


@pytest.fixture(autouse=True)
def _validation_in_the_test(settings):
    """A requested validation runs at once, in the test's thread and transaction: the
    background runner could not see that transaction (it is never committed). The tests of the
    background validation itself (tests/registry/test_background_validation.py) turn this off."""
    settings.VALIDATION_EAGER = True


@pytest.fixture(autouse=True)
def _fresh_cache():
    from django.core.cache import cache

    from access.keys import key_cache
    from inference.cache import body_memo, prediction_cache
    from inference.serving import serving_cache

    for local in (key_cache, serving_cache, prediction_cache.local, body_memo):
        local.clear()

    yield
    # A test may have stopped Redis on purpose; the next test must still start clean.
    with contextlib.suppress(Exception):
        cache.clear()


@pytest.fixture
def make_key(db):
    """make_key("read", "predict", expires=None, revoked=False) -> (APIKey, raw key string)."""

    names = itertools.count(1)

    def _make(*scopes: str, name: str | None = None, expiry_date=None, revoked: bool = False):
        # Key names are unique: a test that does not name its keys gets test-1, test-2, ...
        name = name if name is not None else f"test-{next(names)}"
        api_key, raw = APIKey.objects.create_key(name=name, scopes=list(scopes), expiry_date=expiry_date)
        if revoked:
            api_key.revoked = True
            api_key.save()
        return api_key, raw

    return _make


@pytest.fixture
def client_for(make_key):
    """client_for("read", "manage") -> an APIClient sending a new key with those scopes."""

    def _client(*scopes: str, name: str | None = None) -> APIClient:
        api_key, raw = make_key(*scopes, name=name)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        client.api_key = api_key
        return client

    return _client


@pytest.fixture
def api_client() -> APIClient:
    """No credentials."""
    return APIClient()


@pytest.fixture
def manage_client(client_for) -> APIClient:
    return client_for("read", "manage", name="ops")


@pytest.fixture
def read_client(client_for) -> APIClient:
    return client_for("read", name="reader")


@pytest.fixture
def ops_user(django_user_model):
    return django_user_model.objects.create_user(
        username="ops", password="ops-password-123", is_staff=True, is_superuser=True
    )
