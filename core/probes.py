"""The checks behind the readiness probes (/api/v1/ready, /v2/health/ready): the database
answers, every migration is applied, and every check an app added with `add_readiness_check`
(the registry's: the model storage holds this deployment's files) passes. Each returns
(ok, detail) and never raises; a detail is short and names nothing an unauthenticated caller
should not see (no host, bucket or path)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

logger = logging.getLogger(__name__)

_migrations_applied = False
_readiness_checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = []


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


def add_readiness_check(name: str, check: Callable[[], tuple[bool, str]]) -> None:
    """Add a check to readiness, run after the database's (an app calls this from its
    AppConfig.ready: this layer knows no app). Added once per name."""
    if all(known != name for known, _ in _readiness_checks):
        _readiness_checks.append((name, check))


def check_ready() -> tuple[bool, str]:
    """Everything readiness needs, in order: (False, the first failure's detail: "database
    unreachable: OperationalError", "model storage unreachable"), or (True, "ok" or what the
    passing checks said beside it: "degraded: ...")."""
    ok, detail = check_database()
    if not ok:
        return False, f"database {detail}"
    ok, detail = check_migrations()
    if not ok:
        return False, detail
    notes = []
    for name, check in _readiness_checks:
        try:
            ok, detail = check()
        except Exception as exc:  # a probe answers; the failure is logged, not raised
            logger.exception("readiness check failed", extra={"check": name})
            ok, detail = False, f"{name} check failed: {exc.__class__.__name__}"
        if not ok:
            return False, detail
        if detail != "ok":
            notes.append(detail)
    return True, "; ".join(notes) or "ok"
