"""Serving statistics for the admin dashboard, read from the per-minute rows
(inference.models.ServingMinute) that every server process adds to.

Every figure comes from what was recorded: counts are sums of the minutes since ``since``;
p50 and p95 are computed from the same latency buckets that ``latency_histogram`` returns, the
way Prometheus' ``histogram_quantile`` does (the bucket holding the rank, linear within it);
a rank in the last, unbounded bucket reports that bucket's lower bound (10 000 ms).
``since`` is an aware datetime; minutes are counted from the one that contains it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db.models import Q, Sum
from django.utils import timezone

from inference.models import LATENCY_BOUNDS_MS, LATENCY_FIELDS, ServingMinute

_COUNTS = (
    "requests", "errors", "client_errors", "server_errors", "cache_hits", "cache_misses", "inferences", "executions",
)  # fmt: skip


def _minutes(since: datetime, model_id=None):
    rows = ServingMinute.objects.since(since.replace(second=0, microsecond=0))
    if model_id is not None:
        rows = rows.filter(model_id=model_id)
    return rows


def quantile_ms(q: float, counts: list[int]) -> float | None:
    """The q-quantile (0..1) of latencies counted per bucket of LATENCY_BOUNDS_MS; None if empty."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, count in zip(LATENCY_BOUNDS_MS, counts, strict=True):
        if bound is None:
            return lower  # beyond the last bound: its lower edge is all that is known
        if count and seen + count >= rank:
            return round(lower + (bound - lower) * (rank - seen) / count, 3)
        seen += count
        lower = bound
    return lower


def serving_summary(*, since: datetime) -> list[dict]:
    """One dict per model version that served since ``since``, by name then version:

    ``model_id, model_name, model_version, requests, errors`` (answers that were not 2xx),
    ``client_errors`` (4xx) and ``server_errors`` (5xx) among them, ``p50_ms, p95_ms`` (time
    in the server; None without requests), ``cache_hit_rate`` (hits / cache lookups, 0..1,
    None without lookups) and ``mean_batch_size`` (requests answered by running the model per
    session run, None without runs). Minutes recorded before errors were split count in
    ``errors`` only.
    """
    rows = (
        _minutes(since)
        .values("model_id", "model__name", "model__version", "model__version_key")
        .annotate(**{field: Sum(field) for field in (*_COUNTS, *LATENCY_FIELDS)})
        .order_by("model__name", "model__version_key")
    )
    summary = []
    for row in rows:
        buckets = [row[field] for field in LATENCY_FIELDS]
        lookups = row["cache_hits"] + row["cache_misses"]
        summary.append(
            {
                "model_id": row["model_id"],
                "model_name": row["model__name"],
                "model_version": row["model__version"],
                "requests": row["requests"],
                "errors": row["errors"],
                "client_errors": row["client_errors"],
                "server_errors": row["server_errors"],
                "p50_ms": quantile_ms(0.5, buckets),
                "p95_ms": quantile_ms(0.95, buckets),
                "cache_hit_rate": round(row["cache_hits"] / lookups, 4) if lookups else None,
                "mean_batch_size": round(row["inferences"] / row["executions"], 3) if row["executions"] else None,
            }
        )
    return summary


def serving_timeseries(*, since: datetime, bucket_minutes: int = 60, model_id=None) -> list[dict]:
    """The figures of each period of ``bucket_minutes`` from ``since`` until now, oldest first,
    periods without traffic included: ``[{"start", "requests", "errors", "client_errors",
    "server_errors", "p95_ms", "mean_batch_size"}]`` (the last two None without requests, or
    without session runs). Periods are aligned on multiples of ``bucket_minutes`` since the
    Unix epoch (UTC), so ``bucket_minutes=60`` gives whole hours. ``model_id`` limits it to one
    model version.
    """
    if not isinstance(bucket_minutes, int) or not 1 <= bucket_minutes <= 7 * 24 * 60:
        raise ValueError("bucket_minutes must be a whole number of minutes between 1 and 10080.")
    width = bucket_minutes * 60
    sums = ("requests", "errors", "client_errors", "server_errors", "inferences", "executions", *LATENCY_FIELDS)
    per_minute = _minutes(since, model_id).values("minute").annotate(**{field: Sum(field) for field in sums}).order_by()
    totals: dict[int, list[int]] = {}
    for row in per_minute:
        start = int(row["minute"].timestamp()) // width * width
        entry = totals.setdefault(start, [0] * len(sums))
        for index, field in enumerate(sums):
            entry[index] += row[field]
    first = int(since.timestamp()) // width * width
    last = int(timezone.now().timestamp()) // width * width
    empty = [0] * len(sums)
    series = []
    for start in range(first, max(last, first) + width, width):
        values = dict(zip(sums, totals.get(start, empty), strict=True))
        series.append(
            {
                "start": datetime.fromtimestamp(start, UTC),
                "requests": values["requests"],
                "errors": values["errors"],
                "client_errors": values["client_errors"],
                "server_errors": values["server_errors"],
                "p95_ms": quantile_ms(0.95, [values[field] for field in LATENCY_FIELDS]),
                "mean_batch_size": (
                    round(values["inferences"] / values["executions"], 3) if values["executions"] else None
                ),
            }
        )
    return series


def latency_histogram(*, since: datetime, model_id=None) -> list[dict]:
    """Requests per latency bucket since ``since`` (all model versions, or ``model_id``'s):
    ``[{"le_ms": upper bound in ms, "count": requests above the previous bound and at most
    this one}]`` in ascending order; the last bucket has ``le_ms`` None (above 10 000 ms).
    These are the counts ``serving_summary`` computes p50 and p95 from.
    """
    sums = _minutes(since, model_id).aggregate(**{field: Sum(field) for field in LATENCY_FIELDS})
    pairs = zip(LATENCY_BOUNDS_MS, LATENCY_FIELDS, strict=True)
    return [{"le_ms": bound, "count": sums[field] or 0} for bound, field in pairs]


def last_day() -> datetime:
    """The ``since`` of the dashboard: 24 hours ago."""
    return timezone.now() - timedelta(hours=24)


def recent_requests(*, model_ids) -> dict:
    """Requests each model version answered in the last hour and the last 24 hours:
    ``{model_id: (last_hour, last_day)}``, (0, 0) for a version without traffic. For the
    admin's confirmation pages, which say what an archive, delete or alias move takes away.
    Counts lag by up to SERVING_STATS_FLUSH_SECONDS (the processes' buffers).
    """
    now = timezone.now()
    hour_ago = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    ids = list(model_ids)
    rows = (
        _minutes(now - timedelta(hours=24))
        .filter(model_id__in=ids)
        .values("model_id")
        .annotate(day=Sum("requests"), hour=Sum("requests", filter=Q(minute__gte=hour_ago)))
        .order_by()
    )
    counts = {model_id: (0, 0) for model_id in ids}
    counts.update({row["model_id"]: (row["hour"] or 0, row["day"] or 0) for row in rows})
    return counts
