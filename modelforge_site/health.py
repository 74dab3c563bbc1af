"""Health probes: no authentication, answered by status code.

- /api/v1/live: the process answers.
- /api/v1/ready: the database answers, every migration is applied (503 until then), the model
  storage holds this deployment's files (registry.sentinel: 503 on a node started with another
  bucket, prefix or folder), and the process is not shutting down (503 from SIGTERM on:
  core.shutdown).
- /api/v1/health: database, cache, broker and model storage, each named; 503 when any is down.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core import shutdown
from core.celery_app import app as celery_app
from core.probes import check_database, check_ready


def check_cache() -> tuple[bool, str]:
    try:
        key = "modelforge:health"
        cache.set(key, "1", 5)
        if cache.get(key) != "1":
            return False, "read back failed"
        return True, "ok"
    except Exception as exc:
        return False, f"unreachable: {exc.__class__.__name__}"


def check_storage() -> tuple[bool, str]:
    """The storage can be listed, and it is this deployment's (registry.sentinel)."""
    from registry.sentinel import verdicts
    from registry.storage import ModelStore

    ok, detail = ModelStore().check()
    if ok:
        try:
            verdict = verdicts.current()
        except DatabaseError:  # the database component says so; the storage itself answered
            return ok, f"{detail} (not verified against the database)"
        if not verdict.ok:
            return False, verdict.reason
    return ok, detail


def check_broker() -> tuple[bool, str]:
    if not settings.CELERY_BROKER_URL:
        return True, "not configured: jobs run in-process"
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:
        return False, f"unreachable: {exc.__class__.__name__}"


_component = inline_serializer("HealthComponent", {"ok": serializers.BooleanField(), "detail": serializers.CharField()})
_health = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["healthy", "degraded"]),
        "version": serializers.CharField(),
        "components": serializers.DictField(child=_component),
        "degraded": serializers.ListField(child=serializers.CharField()),
    },
)
_probe = inline_serializer("Probe", {"status": serializers.CharField()})


class ProbeView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)


class HealthView(ProbeView):
    @extend_schema(
        summary="Health of the database, cache, broker and model storage",
        responses={200: _health, 503: _health},
        auth=[],
    )
    def get(self, request):
        started = time.perf_counter()
        components = {}
        checks = (("database", check_database), ("cache", check_cache), ("broker", check_broker))
        checks += (("storage", check_storage),)  # the model storage (a folder, or the S3 bucket)
        for name, check in checks:
            ok, detail = check()
            components[name] = {"ok": ok, "detail": detail}
        degraded = [name for name, part in components.items() if not part["ok"]]
        body = {
            "status": "degraded" if degraded else "healthy",
            "version": settings.MODELFORGE_VERSION,
            "components": components,
            "degraded": degraded,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        return Response(body, status=503 if degraded else 200)


class ReadyView(ProbeView):
    @extend_schema(
        summary="Ready to serve: database up, migrations applied, the model storage this deployment's",
        responses={200: _probe, 503: _probe},
        auth=[],
    )
    def get(self, request):
        if shutdown.stopping.is_set():
            return Response({"status": "shutting down"}, status=503)
        ok, detail = check_ready()
        if ok:  # still serving; a note says why it is degraded ("ready; degraded: ...")
            return Response({"status": "ready" if detail == "ok" else f"ready; {detail}"})
        return Response({"status": detail}, status=503)


class LiveView(ProbeView):
    @extend_schema(summary="The process is alive", responses={200: _probe}, auth=[])
    def get(self, request):
        return Response({"status": "alive"})
