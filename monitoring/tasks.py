"""Monitoring's periodic work on Celery beat (the embedded runner runs the same without a broker)."""

from __future__ import annotations

from core.celery_app import app
from monitoring import threshold_watch as watch


@app.task(name="monitoring.threshold_watch", ignore_result=True)
def threshold_watch() -> dict[str, int]:
    """Beat: raise `threshold.crossed` for the versions whose health level changed."""
    return watch.threshold_watch()
