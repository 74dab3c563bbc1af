"""The rollout guard: a candidate that does worse than its primary loses its traffic by itself.

For every rollout with the guard on and a candidate taking traffic (weight > 0), `rollouts_guard`
compares the candidate's and the primary's serving statistics (inference.models.ServingMinute,
every server process's counts) over the rollout's window (`guard_window_minutes`, and never
before the rollout's last change): once the candidate has answered at least
`guard_min_requests` requests, it trips when

- its error rate exceeds the primary's by more than `guard_error_margin` percentage points, or
- its p95 latency exceeds the primary's by more than `guard_latency_margin` percent (with at
  least `guard_min_requests` primary requests too, so the primary's p95 means something).

A trip is registry.rollouts.rollout_trip: the weight to 0, an audited `guard_tripped` alias
event with the reason, the `rollout.guard_tripped` domain event, and every process's cached
routing dropped. It runs every ROLLOUT_GUARD_INTERVAL_SECONDS (Celery beat's `rollout-guard`,
or the embedded runner without a broker); GET /metrics shows the trips
(``modelforge_rollout_guard_trips_total``, counted from the audit trail) and each rollout's
weight (``modelforge_rollout_weight_percent``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from inference.models import LATENCY_FIELDS, ServingMinute
from inference.stats import quantile_ms
from registry.models import AliasEvent, Rollout
from registry.rollouts import rollout_trip

logger = logging.getLogger(__name__)


def _failures(row: dict) -> int:
    # Server errors only (5xx: a failed run, a timeout, overload): a client's bad input or a
    # throttle is not the candidate's fault, as on the dashboard and in the threshold watch.
    return row["server_errors"] or 0


def _window(model_id, since: datetime) -> dict:
    """Requests, failures and p95 of a version since `since`."""
    row = ServingMinute.objects.filter(model_id=model_id, minute__gte=since).aggregate(
        requests=Sum("requests"), server_errors=Sum("server_errors"), **{field: Sum(field) for field in LATENCY_FIELDS}
    )
    requests = row["requests"] or 0
    return {
        "requests": requests,
        "failures": _failures(row),
        "p95_ms": quantile_ms(0.95, [row[field] or 0 for field in LATENCY_FIELDS]),
    }


def verdict(rollout: Rollout, *, now: datetime | None = None) -> str | None:
    """Why the guard trips this rollout now, None if it does not."""
    now = now or timezone.now()
    since = max(now - timedelta(minutes=rollout.guard_window_minutes), rollout.updated_at)
    since = since.replace(second=0, microsecond=0)
    candidate = _window(rollout.candidate_id, since)
    if candidate["requests"] < rollout.guard_min_requests:
        return None
    primary = _window(rollout.alias.model_id, since)
    candidate_rate = candidate["failures"] / candidate["requests"]
    primary_rate = primary["failures"] / primary["requests"] if primary["requests"] else 0.0
    if (candidate_rate - primary_rate) * 100 > rollout.guard_error_margin:
        return (
            f"error rate {candidate_rate:.1%} over {candidate['requests']} requests against the primary's "
            f"{primary_rate:.1%} over {primary['requests']}: more than {rollout.guard_error_margin:g} points worse "
            f"(window {rollout.guard_window_minutes} min)"
        )
    if (
        primary["requests"] >= rollout.guard_min_requests
        and candidate["p95_ms"] is not None
        and primary["p95_ms"]
        and candidate["p95_ms"] > primary["p95_ms"] * (1 + rollout.guard_latency_margin / 100)
    ):
        return (
            f"p95 {candidate['p95_ms']:g} ms over {candidate['requests']} requests against the primary's "
            f"{primary['p95_ms']:g} ms: more than {rollout.guard_latency_margin:g} % slower "
            f"(window {rollout.guard_window_minutes} min)"
        )
    return None


def rollouts_guard(*, now: datetime | None = None) -> list[AliasEvent]:
    """Check every guarded rollout whose candidate takes traffic; returns the trips' events."""
    tripped = []
    guarded = Rollout.objects.filter(guard_enabled=True, weight__gt=0, candidate__isnull=False).select_related("alias")
    for rollout in guarded:
        try:
            reason = verdict(rollout, now=now)
            if reason is None:
                continue
            event = rollout_trip(rollout_id=rollout.pk, reason=reason)
        except Exception:  # one rollout's failure does not stop the guard for the others
            logger.exception("rollout guard failed", extra={"rollout": rollout.pk})
            continue
        if event is not None:
            tripped.append(event)
    return tripped


def collect():
    """The rollouts' metrics for GET /metrics, read at scrape time (modelforge_site.metrics)."""
    weights = GaugeMetricFamily(
        "modelforge_rollout_weight_percent",
        "Each rollout's candidate weight (percent of the alias's requests).",
        labels=["model", "alias", "candidate"],
    )
    for name, alias, candidate, weight in Rollout.objects.values_list(
        "alias__name", "alias__alias", "candidate__version", "weight"
    ):
        weights.add_metric([name, alias, candidate or ""], weight)
    yield weights
    trips = CounterMetricFamily(
        "modelforge_rollout_guard_trips",
        "Rollouts the guard stopped (their candidate's weight set to 0), from the alias audit trail.",
        labels=["model", "alias"],
    )
    counted = (
        AliasEvent.objects.filter(action=AliasEvent.Action.GUARD_TRIPPED)
        .order_by()
        .values_list("name", "alias")
        .annotate(n=Count("pk"))
    )
    for name, alias, count in counted:
        trips.add_metric([name, alias], count)
    yield trips
