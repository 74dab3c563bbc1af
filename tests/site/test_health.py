"""Health probes and the API documentation."""

from __future__ import annotations

import contextlib

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_health_reports_each_component(api_client):
    response = api_client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert set(body["components"]) == {"database", "cache", "broker", "storage"}
    assert body["version"]


def test_health_is_503_naming_the_cache_when_redis_is_down(api_client, settings):
    from django.core.cache import caches

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 0.2},
        }
    }
    caches._settings = None  # let the cache handler re-read the overridden setting
    with contextlib.suppress(AttributeError):
        del caches._connections.default
    response = api_client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["degraded"] == ["cache"]
    assert response.json()["status"] == "degraded"


def test_openapi_schema_validates_without_warnings():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")


def test_swagger_and_redoc_are_served_with_local_assets(client, ops_user):
    client.force_login(ops_user)
    for url in ("/api/v1/docs", "/api/v1/redoc"):
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert "/static/drf_spectacular_sidecar/" in html
        assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    static = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert static.status_code == 200


def test_unknown_api_route_is_json_404(api_client):
    response = api_client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
