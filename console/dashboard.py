"""What the dashboard shows, read from recorded data: the per-minute serving statistics
(inference.stats), the jobs table, and the Celery report of /api/v1/health/celery."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from console import charts

WINDOW = timedelta(hours=24)
BUCKET_MINUTES = 60


def serving(*, since: datetime, model_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Per model version: requests, errors, p50/p95, cache hit rate, mean batch size; and the
    charts (for one version when model_id is given)."""
    from inference import stats

    summary = stats.serving_summary(since=since)
    series = stats.serving_timeseries(since=since, bucket_minutes=BUCKET_MINUTES, model_id=model_id)
    histogram = stats.latency_histogram(since=since, model_id=model_id)
    for row in summary:
        row["error_rate"] = row["errors"] / row["requests"] if row["requests"] else None
    previous = None
    for row in histogram:
        row["label"] = charts.bucket_label(row["le_ms"], previous)
        previous = row["le_ms"]
    return {
        "summary": summary,
        "totals": {
            "requests": sum(row["requests"] for row in summary),
            "errors": sum(row["errors"] for row in summary),
            "versions": len(summary),
        },
        "series": series,
        "histogram": histogram,
        "requests_chart": charts.requests_chart(series),
        "latency_chart": charts.latency_chart(histogram),
        "selected": next((row for row in summary if row["model_id"] == model_id), None),
    }


def jobs(*, since: datetime) -> dict[str, Any]:
    """Jobs by status: all of them, and those created in the window."""
    from jobs.models import Job

    def by_status(queryset) -> dict[str, int]:
        return dict(queryset.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))

    total, recent = by_status(Job.objects.all()), by_status(Job.objects.filter(created_at__gte=since))
    return {
        "rows": [
            {"status": status, "label": label, "total": total.get(status, 0), "recent": recent.get(status, 0)}
            for status, label in Job.Status.choices
        ],
        "active": sum(total.get(status, 0) for status in Job.ACTIVE),
    }


def workers() -> dict[str, Any]:
    """The Celery (or embedded runner) report, as GET /api/v1/health/celery gives it."""
    from jobs.monitoring import celery_report

    report, healthy = celery_report()
    return {**report, "healthy": healthy}


def dashboard(*, model_id: uuid.UUID | None = None) -> dict[str, Any]:
    now = timezone.now()
    since = now - WINDOW
    return {
        "since": since,
        "now": now,
        "serving": serving(since=since, model_id=model_id),
        "jobs": jobs(since=since),
        "workers": workers(),
        "model_id": model_id,
    }
