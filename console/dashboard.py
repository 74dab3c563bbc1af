"""What the dashboard shows, read from recorded data: the per-minute serving statistics
(inference.stats) judged against each name's health thresholds (monitoring.health), the alias
trail (registry AliasEvent: moves, rollouts) as markers on the time charts, the jobs table, and
the Celery report of /api/v1/health/celery.

Beside each version's serving health, its drift (monitoring.drift.latest_for): two separate
words, "serving: green, drift: red (X[0])", a red drift putting the version at the top as a
red serving level does; versions not served in the range are listed when their drift is amber
or red. Rollouts (registry Rollout, AliasEvent): the guard trips of the range as notices at the
top, and the rollouts running (alias, primary → candidate, weight).

Everything is over one time range of ``RANGES`` (1 h to 7 d), in periods short enough to see a
minute's spike in the short ranges: the health levels judge the range's totals, the same numbers
as the table under them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from console import charts
from console.name_page import drift_anchor, name_url
from monitoring.drift import latest_for
from monitoring.health import Level, level, thresholds_for


@dataclass(frozen=True)
class Range:
    key: str  # the ?range= value
    label: str  # in words, "6 hours"
    span: timedelta
    bucket_minutes: int  # one period of the time charts
    period: str  # one period in words, for "Requests per 5 minutes"
    label_every: int  # a time under the periods starting every n minutes (UTC) on the charts
    label_format: str  # strftime, for the charts' axis
    table_format: str  # Django's date format, for the tables' periods


RANGES = {
    "1h": Range("1h", "1 hour", timedelta(hours=1), 1, "minute", 10, "%H:%M", "H:i"),
    "6h": Range("6h", "6 hours", timedelta(hours=6), 5, "5 minutes", 60, "%H:%M", "H:i"),
    "24h": Range("24h", "24 hours", timedelta(hours=24), 15, "15 minutes", 240, "%H:%M", "H:i"),
    "7d": Range("7d", "7 days", timedelta(days=7), 60, "hour", 24 * 60, "%a %d", "D j, H:i"),
}
DEFAULT_RANGE = "24h"
# ?refresh= values: how often the page reloads itself (seconds), None for never.
REFRESH = {"off": None, "10": 10, "60": 60}
DEFAULT_REFRESH = "off"
# The alias changes drawn on the charts at most (the newest of the range).
MAX_MARKERS = 50
# Worst first: what ops should look at is on top.
LEVEL_ORDER = {Level.RED: 0, Level.AMBER: 1, Level.GREEN: 2, Level.IDLE: 3}
DRIFTED = ("amber", "red")


def health(summary: list[dict]) -> dict[str, Any]:
    """Each version's level (and why) against its name's thresholds, judged on the server
    errors (5xx) and p95 of the range; written into the summary rows, and listed worst first."""
    thresholds = thresholds_for(row["model_name"] for row in summary)
    for row in summary:
        row["thresholds"] = thresholds[row["model_name"]]
        row["level"], row["reason"] = level(
            requests=row["requests"],
            server_errors=row["server_errors"],
            p95_ms=row["p95_ms"],
            thresholds=row["thresholds"],
        )
    ordered = sorted(summary, key=lambda row: LEVEL_ORDER[row["level"]])
    counts = {colour.value: sum(row["level"] == colour for row in summary) for colour in Level}
    return {"versions": ordered, "counts": counts}


def drift(summary: list[dict]) -> list[dict]:
    """Writes each summary row's latest drift (``row["drift"]``: level, window, the drifted
    features' names, the link to its name page's drift section; None without results); returns
    rows for the versions not served in the range whose drift is amber or red (serving idle)."""
    from monitoring.models import DriftResult
    from registry.models import MLModel

    served = {row["model_id"] for row in summary}
    drifted = set(DriftResult.objects.filter(level__in=DRIFTED).values_list("model_id", flat=True)) - served
    latest = latest_for(served | drifted)
    unserved = []
    for model in MLModel.objects.filter(pk__in=[model_id for model_id in drifted if model_id in latest]):
        unserved.append(
            {
                "model_id": model.pk,
                "model_name": model.name,
                "model_version": model.version,
                "requests": 0,
                "level": Level.IDLE,
                "reason": "no requests in the range",
                "not_served": True,
            }
        )
    for row in summary + unserved:
        found = latest.get(row["model_id"])
        row["drift"] = None
        if found is not None:
            drifted_features = [feature for feature in found["features"] if feature["level"] in DRIFTED]
            # The most drifted feature's distribution against the reference, small, beside its
            # words (the name page charts every drifted feature).
            worst = max(drifted_features, key=lambda feature: feature.get("psi") or 0.0, default=None)
            row["drift"] = {
                "level": found["level"],
                "window": found["window"],
                "features": [feature["name"] for feature in drifted_features],
                "url": f"{name_url(row['model_name'])}#{drift_anchor(row['model_version'])}",
                "chart": charts.distribution_chart(worst, window=found["window"]) if worst else None,
            }
    return unserved


def status_order(row: dict) -> tuple:
    """Worst first: the worse of the serving and the drift level, then the serving level."""
    serving = LEVEL_ORDER[row["level"]]
    drifted = LEVEL_ORDER[Level(row["drift"]["level"])] if row.get("drift") else LEVEL_ORDER[Level.IDLE]
    return (min(serving, drifted), serving)


def rollouts(*, since: datetime) -> dict[str, Any]:
    """The guard trips of the range (newest first: alias, candidate, reason, when) and the
    rollouts running now (alias, primary → candidate, weight, shadow, guard)."""
    from registry.models import AliasEvent, Rollout

    trips = AliasEvent.objects.filter(created_at__gte=since, action=AliasEvent.Action.GUARD_TRIPPED).newest_first()
    running = Rollout.objects.with_versions().order_by("alias__name", "alias__alias")
    return {
        "trips": [
            {
                "alias": f"{event.name}@{event.alias}",
                "candidate": event.from_version,
                "reason": event.detail,
                "at": event.created_at,
                "name_url": name_url(event.name) + "#mf-aliases",
            }
            for event in trips[:MAX_MARKERS]
        ],
        "running": [
            {
                "alias": str(rollout.alias),
                "primary": rollout.alias.model.version,
                "candidate": rollout.candidate.version if rollout.candidate else None,
                "weight": rollout.weight,
                "shadow": rollout.shadow.version if rollout.shadow else None,
                "shadow_percent": rollout.shadow_percent,
                "tripped": rollout.guard_tripped_at is not None,
                "url": reverse("admin:registry_modelalias_rollout", args=[rollout.alias_id]),
            }
            for rollout in running
        ],
    }


def markers(*, since: datetime, name: str | None = None) -> list[dict]:
    """The alias changes of the range (every action: created, moved, deleted, rollout steps),
    oldest first and numbered as the charts show them; of one model name when given."""
    from registry.models import AliasEvent

    events = AliasEvent.objects.filter(created_at__gte=since)
    if name is not None:
        events = events.named(name)
    newest = list(events.newest_first()[:MAX_MARKERS])
    rows = []
    for number, event in enumerate(reversed(newest), start=1):
        words = (
            f"{event.name}@{event.alias} {event.get_action_display().lower()}: "
            f"{event.from_version or '–'} → {event.to_version or '–'}"
            + (f" by {event.actor_label}" if event.actor_label else "")
        )
        rows.append(
            {
                "number": number,
                "at": event.created_at,
                "words": words,
                "marker": charts.Marker(
                    at=event.created_at, text=f"{event.created_at:%Y-%m-%d %H:%M} UTC: {words}", number=number
                ),  # fmt: skip
            }
        )
    return rows


def serving(*, since: datetime, span: Range, model_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Per model version: requests, client and server errors, p50/p95, cache hit rate, mean
    batch size and health level; and the charts over time (of one version when model_id is
    given) with the range's alias changes on them."""
    from inference import stats

    summary = stats.serving_summary(since=since)
    series = stats.serving_timeseries(since=since, bucket_minutes=span.bucket_minutes, model_id=model_id)
    histogram = stats.latency_histogram(since=since, model_id=model_id)
    for row in summary:
        row["error_rate"] = row["errors"] / row["requests"] if row["requests"] else None
        row["server_error_rate"] = row["server_errors"] / row["requests"] if row["requests"] else None
    judged = health(summary)
    judged["versions"] = sorted(summary + drift(summary), key=status_order)
    selected = next((row for row in summary if row["model_id"] == model_id), None)
    events = markers(since=since, name=selected["model_name"] if selected else None)
    previous = None
    for row in histogram:
        row["label"] = charts.bucket_label(row["le_ms"], previous)
        previous = row["le_ms"]
    axis = charts.TimeAxis(start=series[0]["start"], bucket=timedelta(minutes=span.bucket_minutes), periods=len(series))
    time_chart = {
        "label_every": span.label_every,
        "label_format": span.label_format,
        "period": span.period,
        "axis": axis,
        "markers": [event["marker"] for event in events],
    }
    return {
        "summary": summary,
        "health": judged,
        "totals": {
            "requests": sum(row["requests"] for row in summary),
            "errors": sum(row["errors"] for row in summary),
            "client_errors": sum(row["client_errors"] for row in summary),
            "server_errors": sum(row["server_errors"] for row in summary),
            "versions": len(summary),
        },
        "series": series,
        "histogram": histogram,
        "markers": events,
        "requests_chart": charts.requests_chart(series, **time_chart),
        "errors_chart": charts.errors_chart(series, **time_chart),
        "p95_chart": charts.p95_chart(series, **time_chart, thresholds=selected["thresholds"] if selected else None),
        "batch_chart": charts.batch_chart(series, **time_chart),
        "latency_chart": charts.latency_chart(histogram),
        "selected": selected,
    }


def jobs(*, since: datetime) -> dict[str, Any]:
    """Jobs by status: all of them, and those created in the range."""
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


def dashboard(*, range_key: str = DEFAULT_RANGE, model_id: uuid.UUID | None = None) -> dict[str, Any]:
    span = RANGES[range_key]
    now = timezone.now()
    since = now - span.span
    return {
        "since": since,
        "now": now,
        "range": span,
        "serving": serving(since=since, span=span, model_id=model_id),
        "jobs": jobs(since=since),
        "workers": workers(),
        "rollouts": rollouts(since=since),
        "model_id": model_id,
    }
