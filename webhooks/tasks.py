"""Webhook deliveries on Celery. Thin: each task takes an id and calls a service; the attempt
claims its delivery with a conditional UPDATE, so a second copy of a message does nothing.
Without a broker the same services run on the embedded runner (`services.delivery_enqueue`)."""

from __future__ import annotations

from core.celery_app import app
from webhooks import services


@app.task(name=services.DELIVER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(delivery_id: str) -> None:
    services.delivery_attempt(delivery_id=delivery_id)


@app.task(name="webhooks.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Beat: hand over again the deliveries whose message was lost."""
    return services.deliveries_sweep()
