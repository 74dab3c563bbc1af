"""What `GET /api/v1/health/celery` reports: the broker, the workers that answer a ping, the
queues with their lengths, and the jobs by status. Each check is bounded by a short timeout,
so a dead broker or a silent worker makes the answer degraded, not slow.

And what GET /metrics reads at scrape time (modelforge_site.metrics): the queue lengths, the
oldest queued job per queue, and the workers alive, counted from the heartbeats they record
here (a ping would hold every scrape for its whole timeout)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from core.celery_app import app as celery_app
from core.embedded_runner import runner
from jobs.models import Job

logger = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 1.0
QUEUES = ("high", "normal", "low")
# The Celery workers' heartbeats, for GET /metrics: a sorted set in the broker of worker name ->
# the broker's clock at its last heartbeat (modelforge_site.celery records each). Read at scrape
# time instead of pinging the workers, which waits out its whole timeout on every scrape. The
# broker's clock, not the hosts': a skewed worker clock must not make it look dead (or alive).
HEARTBEATS = "modelforge:worker-heartbeats"
# Celery sends a heartbeat every 2 s (unless a worker runs --without-heartbeat): five missed
# ones and the worker counts as gone.
HEARTBEAT_ALIVE_SECONDS = 10
# A worker silent this long (killed, renamed, scaled away) is dropped from the set.
HEARTBEAT_FORGET_SECONDS = 24 * 3600


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
    with _broker_client() as client:
        # Jobs are sent without message priorities, so each queue is one Redis list.
        return {name: int(client.llen(name)) for name in QUEUES}


def oldest_queued_seconds(*, now: datetime | None = None) -> dict[str, float]:
    """Per queue (a job's priority is its queue), how long its oldest queued job has waited
    since it was handed over (a retry: since it was due), 0 when none waits: the database."""
    now = now or timezone.now()
    oldest = dict(
        Job.objects.filter(status=Job.Status.QUEUED)
        .order_by()
        .values("priority")
        .annotate(at=Min("enqueued_at"))
        .values_list("priority", "at")
    )
    return {name: max((now - oldest[name]).total_seconds(), 0.0) if oldest.get(name) else 0.0 for name in QUEUES}


def live_workers() -> int:
    """Celery workers whose last heartbeat reached the broker within HEARTBEAT_ALIVE_SECONDS
    (and drops those silent for HEARTBEAT_FORGET_SECONDS). Raises when the broker cannot be
    reached."""
    with _broker_client() as client:
        now = _broker_time(client)
        beats = client.zrange(HEARTBEATS, 0, -1, withscores=True)
        gone = [name for name, at in beats if at < now - HEARTBEAT_FORGET_SECONDS]
        if gone:
            client.zrem(HEARTBEATS, *gone)
    return sum(1 for _, at in beats if at >= now - HEARTBEAT_ALIVE_SECONDS)


def worker_heartbeat(name: str) -> None:
    """Record a heartbeat of the worker ``name`` (called by the worker itself, every 2 s)."""
    try:
        with celery_app.pool.acquire(block=True, timeout=2) as conn:
            client = conn.default_channel.client
            client.zadd(HEARTBEATS, {name: _broker_time(client)})
    except Exception as exc:  # the broker down: the worker's own reconnection logs it
        logger.debug("heartbeat not recorded", extra={"worker": name, "error": exc.__class__.__name__})


def worker_gone(name: str) -> None:
    """Forget the worker ``name`` at once: it is shutting down (not lost)."""
    try:
        with celery_app.pool.acquire(block=True, timeout=2) as conn:
            conn.default_channel.client.zrem(HEARTBEATS, name)
    except Exception as exc:  # it will age out of the count instead
        logger.debug("worker not forgotten", extra={"worker": name, "error": exc.__class__.__name__})


@contextlib.contextmanager
def _broker_client() -> Iterator[Any]:
    """The broker's Redis client; raises when the broker cannot be reached."""
    with celery_app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        # Kombu's client adds the transport's key prefix (CELERY_BROKER_KEY_PREFIX) to the key of
        # the commands used here (LLEN, ZADD, ZRANGE, ZREM).
        yield conn.default_channel.client


def _broker_time(client) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


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
