"""Periodic maintenance of the inference app (scheduled by Celery beat)."""

from core.celery_app import app  # bound to the project's app (core.celery_app says why)
from inference.history import history_cleanup
from inference.serving_stats import serving_stats_cleanup


@app.task(name="inference.cleanup_history", ignore_result=True)
def cleanup_history() -> int:
    """Remove prediction history older than HISTORY_RETENTION_DAYS (on PostgreSQL, dropping its
    day partitions, and making those of the week ahead) and serving statistics older than
    SERVING_STATS_RETENTION_DAYS; returns the rows removed."""
    return history_cleanup() + serving_stats_cleanup()


@app.task(name="inference.rollout_guard", ignore_result=True)
def rollout_guard() -> int:
    """Stop the rollouts whose candidate does worse than its primary (inference.rollout_guard)."""
    from inference.rollout_guard import rollouts_guard

    return len(rollouts_guard())
