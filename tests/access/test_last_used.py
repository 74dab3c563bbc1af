"""A key's last use: written when the key is looked up, at most once a minute per key, and shown
in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from access.keys import key_cache
from access.models import APIKey

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


def updates_of_keys(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "access_apikey" in q["sql"]]


def test_a_used_key_shows_its_last_use_in_the_admin(client, ops_user, api_client, make_key):
    api_key, raw = make_key("read", name="reporting")
    client.force_login(ops_user)
    assert "reporting" in client.get(reverse("admin:access_apikey_changelist")).content.decode()
    assert api_key.last_used_at is None

    assert api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    api_key.refresh_from_db()
    assert timezone.now() - api_key.last_used_at < timedelta(seconds=30)
    shown = timezone.localtime(api_key.last_used_at).strftime("%Y-%m-%d %H:%M:%S")
    row = client.get(reverse("admin:access_apikey_changelist")).content.decode()
    assert f"{shown} UTC" in row  # the admin's one timestamp format, seconds and zone


def test_last_use_is_written_at_most_once_a_minute(api_client, make_key):
    api_key, raw = make_key("read", name="busy")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    with CaptureQueriesContext(connection) as first:
        api_client.get(MODELS)
    assert len(updates_of_keys(first.captured_queries)) == 1

    # Cached: no query about the key at all.
    with CaptureQueriesContext(connection) as cached:
        api_client.get(MODELS)
    assert not [q for q in cached.captured_queries if "access_apikey" in q["sql"]]

    # Looked up again (the cache's TTL ran out, or another process) within the minute: no write.
    half_a_minute_ago = timezone.now() - timedelta(seconds=30)
    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=half_a_minute_ago)
    key_cache.clear()
    with CaptureQueriesContext(connection) as within:
        api_client.get(MODELS)
    assert updates_of_keys(within.captured_queries) == []
    api_key.refresh_from_db()
    assert api_key.last_used_at == half_a_minute_ago

    # More than a minute later: written again.
    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    key_cache.clear()
    api_client.get(MODELS)
    api_key.refresh_from_db()
    assert timezone.now() - api_key.last_used_at < timedelta(seconds=30)


def test_a_refused_key_is_not_marked_used(api_client, make_key):
    api_key, raw = make_key("read", name="old", revoked=True)

    assert api_client.get(MODELS, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401

    api_key.refresh_from_db()
    assert api_key.last_used_at is None
