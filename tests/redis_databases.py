"""A fixture for tests whose state lives in Redis across requests (throttle counters): every
test's teardown flushes the cache's Redis database (tests/conftest.py), so under pytest-xdist
each worker gets its own database, numbered as tests/inference/conftest.py numbers them. A
single test process keeps REDIS_URL's own database."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

_FIRST_WORKER_DB = 2
_REDIS_DATABASES = 16


@pytest.fixture(autouse=True)
def redis_database_per_worker(settings, worker_id):
    if not settings.REDIS_URL or worker_id == "master":
        yield
        return
    from django.core.cache import cache

    index = int(worker_id.removeprefix("gw"))
    database = _FIRST_WORKER_DB + index % (_REDIS_DATABASES - _FIRST_WORKER_DB)
    url = urlsplit(settings.REDIS_URL)
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["LOCATION"] = urlunsplit(url._replace(path=f"/{database}"))
    settings.CACHES = caches
    cache.clear()
    yield
