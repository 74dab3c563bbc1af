"""Monitoring's periodic work on Celery beat (the embedded runner runs the same without a broker).
Thin: each calls a service (core.celery_app says why @app.task)."""

from __future__ import annotations

from core.celery_app import app
from monitoring import services
from monitoring import threshold_watch as watch


@app.task(name="monitoring.threshold_watch", ignore_result=True)
def threshold_watch() -> dict[str, int]:
    """Beat: raise `threshold.crossed` for the versions whose health level changed."""
    return watch.threshold_watch()


@app.task(name="monitoring.drift", ignore_result=True)
def drift() -> dict[str, int]:
    """Beat (DRIFT_INTERVAL_SECONDS): build references that can be built, compute every ready
    version's drift over DRIFT_WINDOWS."""
    return services.drift_run()
