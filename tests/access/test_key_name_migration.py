"""Migration access 0002 makes key names unique and keeps every key that shared a name."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db  # PostgreSQL (and SQLite) roll the schema changes back too

BEFORE = [("access", "0001_initial")]
AFTER = [("access", "0002_unique_key_names")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_keys_sharing_a_name_are_renamed_after_their_prefix_and_the_oldest_keeps_it():
    old_apps = migrate(BEFORE)
    OldKey = old_apps.get_model("access", "APIKey")
    now = timezone.now()
    rows = [
        ("aaaa0001", "ci", now - timedelta(days=3), False),
        ("aaaa0002", "CI", now - timedelta(days=2), True),
        ("aaaa0003", "ci", now - timedelta(days=1), False),
        ("aaaa0004", "x" * 50, now - timedelta(days=2), False),
        ("aaaa0005", "x" * 50, now - timedelta(days=1), False),
        ("aaaa0006", "alone", now, False),
    ]
    for prefix, name, created, revoked in rows:
        key = OldKey.objects.create(
            id=f"{prefix}.hash", prefix=prefix, hashed_key="hash", name=name, revoked=revoked, scopes=["read"]
        )
        OldKey.objects.filter(pk=key.pk).update(created=created)

    printed = io.StringIO()
    with redirect_stdout(printed):
        new_apps = migrate(AFTER)

    names = dict(new_apps.get_model("access", "APIKey").objects.values_list("prefix", "name"))
    assert names == {
        "aaaa0001": "ci",
        "aaaa0002": "CI-aaaa0002",
        "aaaa0003": "ci-aaaa0003",
        "aaaa0004": "x" * 50,
        "aaaa0005": "x" * 41 + "-aaaa0005",
        "aaaa0006": "alone",
    }
    assert "API key 'CI' renamed 'CI-aaaa0002': another key already had that name." in printed.getvalue()
    assert printed.getvalue().count("renamed") == 3
    # None was revoked or lost on the way.
    assert new_apps.get_model("access", "APIKey").objects.filter(revoked=True).count() == 1
