"""The threshold watch: every MONITOR_THRESHOLD_INTERVAL_SECONDS (Celery beat's
`monitoring.threshold_watch`, or the embedded runner's timer), judge each version that served in
the last MONITOR_THRESHOLD_WINDOW_SECONDS with monitoring.health.level, and raise
`threshold.crossed` when its level changed.

Idle (too few requests to judge) is no judgement: it leaves the last level as it was, so a
version whose traffic stops and comes back is compared with how it was when last judged. A
version judged for the first time is compared with green: a new version that starts red raises
an event, one that starts green does not.

Several processes may run the watch at once (beat, and each server's embedded runner): the level
moves with a conditional UPDATE from the level read, so only one of them raises each change.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import events
from inference.stats import serving_summary
from monitoring.health import Level, level, thresholds_for
from monitoring.models import ThresholdState

logger = logging.getLogger(__name__)


def server_errors(row: dict) -> int:
    """The server errors (5xx: a failed run, a timeout, a full queue) of a serving_summary row:
    client errors (4xx) are the callers' to fix and never make a version amber or red, as on
    the dashboard."""
    return row["server_errors"]


def threshold_watch(*, now=None) -> dict[str, int]:
    """Judge the versions that served in the window; raise `threshold.crossed` for each level
    that changed. Returns how many versions were judged and how many crossed."""
    now = now or timezone.now()
    window = settings.MONITOR_THRESHOLD_WINDOW_SECONDS
    rows = serving_summary(since=now - timedelta(seconds=window))
    thresholds = thresholds_for(row["model_name"] for row in rows)
    known = {
        state.model_id: state for state in ThresholdState.objects.filter(model_id__in=[r["model_id"] for r in rows])
    }
    report = {"judged": 0, "crossed": 0}
    for row in rows:
        errors = server_errors(row)
        colour, reason = level(
            requests=row["requests"],
            server_errors=errors,
            p95_ms=row["p95_ms"],
            thresholds=thresholds[row["model_name"]],
        )
        if colour == Level.IDLE:
            continue
        report["judged"] += 1
        previous = known.get(row["model_id"])
        before = previous.level if previous is not None else Level.GREEN
        if colour == before:
            continue
        with transaction.atomic():
            if previous is None:
                _, created = ThresholdState.objects.get_or_create(
                    model_id=row["model_id"], defaults={"level": colour, "reason": reason[:300], "changed_at": now}
                )
                moved = created
            else:
                moved = ThresholdState.objects.filter(pk=previous.pk, level=before).update(
                    level=colour, reason=reason[:300], changed_at=now
                )
            if not moved:
                continue  # another watch recorded (and raised) this change
            events.emit(
                "threshold.crossed",
                {
                    "model_id": str(row["model_id"]),
                    "name": row["model_name"],
                    "version": row["model_version"],
                    "from_level": str(before),
                    "to_level": str(colour),
                    "reason": reason,
                    "requests": row["requests"],
                    "server_errors": errors,
                    "p95_ms": row["p95_ms"],
                    "window_seconds": window,
                },
            )
        report["crossed"] += 1
        logger.info(
            "threshold crossed",
            extra={"model": f"{row['model_name']}:{row['model_version']}", "from": before, "to": colour},
        )
    return report
