"""Celery tasks of monitoring. Thin: each calls a service (core.celery_app says why @app.task)."""

from __future__ import annotations

from core.celery_app import app
from monitoring import services


@app.task(name="monitoring.drift", ignore_result=True)
def drift() -> dict[str, int]:
    """Beat (DRIFT_INTERVAL_SECONDS): build references that can be built, compute every ready
    version's drift over DRIFT_WINDOWS."""
    return services.drift_run()
