"""The checks behind the readiness probes (/api/v1/ready, /v2/health/ready): the database
answers, and every migration is applied. Each returns (ok, detail) and never raises."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

_migrations_applied = False


def check_database() -> tuple[bool, str]:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # any driver error means "down" to a probe
        return False, f"unreachable: {exc.__class__.__name__}"


def check_migrations() -> tuple[bool, str]:
    global _migrations_applied
    if _migrations_applied:
        return True, "ok"
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        return False, f"{len(pending)} migrations not applied; run manage.py migrate"
    _migrations_applied = True  # migrations never un-apply while a process runs
    return True, "ok"
