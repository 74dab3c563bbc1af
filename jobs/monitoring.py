"""What `GET /api/v1/health/celery` reports: the broker, the workers that answer a ping, the
queues with their lengths, and the jobs by status. Each check is bounded by a short timeout,
so a dead broker or a silent worker makes the answer degraded, not slow."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.models import Count

from core.celery_app import app as celery_app
from core.embedded_runner import runner
from jobs.models import Job

PING_TIMEOUT_SECONDS = 1.0
QUEUES = ("high", "normal", "low")


def celery_report() -> tuple[dict[str, Any], bool]:
    """(report, healthy). Healthy: the broker answers and at least one worker does."""
    started = time.perf_counter()
    counts = dict(Job.objects.active().order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
    jobs = {status: counts.get(status, 0) for status in Job.ACTIVE}
    if not settings.CELERY_BROKER_URL:
        report, healthy = _embedded()
    else:
        report, healthy = _broker()
    report["jobs"] = jobs
    report["status"] = "healthy" if healthy else "degraded"
    report["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return report, healthy


def queue_lengths() -> dict[str, int]:
    """Messages waiting per queue (high, normal, low): the broker's lists, or without a broker
    the queued jobs by priority. Raises when the broker cannot be reached."""
    if not settings.CELERY_BROKER_URL:
        queued = Job.objects.filter(status=Job.Status.QUEUED).order_by().values("priority").annotate(n=Count("pk"))
        queued = {row["priority"]: row["n"] for row in queued}
        return {name: queued.get(name, 0) for name in QUEUES}
    with celery_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        client = conn.default_channel.client  # honours the transport's key prefix
        # Jobs are sent without message priorities, so each queue is one Redis list.
        return {name: int(client.llen(name)) for name in QUEUES}


def _embedded() -> tuple[dict[str, Any], bool]:
    queued = queue_lengths()
    return {
        "mode": "embedded",
        "broker": {"ok": True, "detail": "not configured: jobs run in background threads of the server"},
        "workers": [{"name": runner.name, **runner.stats()}],
        "queues": [{"name": name, "length": length} for name, length in queued.items()],
    }, True


def _broker() -> tuple[dict[str, Any], bool]:
    from kombu.utils.url import maybe_sanitize_url

    report: dict[str, Any] = {"mode": "celery", "workers": [], "queues": []}
    try:
        report["queues"] = [{"name": name, "length": length} for name, length in queue_lengths().items()]
        report["broker"] = {"ok": True, "detail": maybe_sanitize_url(settings.CELERY_BROKER_URL)}
    except Exception as exc:
        report["broker"] = {"ok": False, "detail": f"unreachable: {exc.__class__.__name__}"}
        return report, False
    replies = celery_app.control.inspect(timeout=PING_TIMEOUT_SECONDS).ping() or {}
    report["workers"] = [{"name": name, "ok": True} for name in sorted(replies)]
    return report, bool(replies)
