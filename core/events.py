"""Domain events: what other systems hear about (webhooks), raised by the app that knows.

An app calls ``emit(type, data)`` where the thing happens; the event goes out once the
transaction that made it commits (never for a rolled-back change), as the ``raised`` signal
with ``type``, ``data`` (JSON-serialisable) and ``id`` (a new UUID, the receivers'
idempotency key). Receivers register in their AppConfig.ready (webhooks does); a receiver that
fails is logged and never fails the sender. This module knows none of the receivers.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Every event type, and what it says (docs/operations.md lists the payloads).
EVENT_TYPES: dict[str, str] = {
    "model.validated": "A version passed validation and is ready to serve.",
    "model.failed": "A version failed validation.",
    "alias.moved": "An alias was created, moved to another version or deleted.",
    "rollout.started": "An alias got a candidate version and a weight.",
    "rollout.weight_changed": "A rollout's candidate weight changed.",
    "rollout.promoted": "A rollout's candidate became the alias's version.",
    "rollout.aborted": "A rollout ended without promotion.",
    "rollout.guard_tripped": "The automatic guard set a candidate's weight to 0.",
    "job.completed": "A job finished (completed, or partially completed).",
    "job.failed": "A job failed.",
    "drift.raised": "A version's inputs or outputs drifted from its reference.",
    "drift.cleared": "A version's drift is back under its thresholds.",
    "threshold.crossed": "A version's error rate or p95 crossed its model's thresholds.",
}

raised = Signal()  # sent with type=, data=, id=


def emit(event_type: str, data: dict[str, Any]) -> None:
    """Raise ``event_type`` with ``data`` once the current transaction commits (at once outside one)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = str(uuid.uuid4())

    def send() -> None:
        for receiver, outcome in raised.send_robust(sender=event_type, type=event_type, data=data, id=event_id):
            if isinstance(outcome, Exception):
                logger.error(
                    "event receiver failed",
                    exc_info=outcome,
                    extra={"event": event_type, "receiver": getattr(receiver, "__qualname__", str(receiver))},
                )

    transaction.on_commit(send, robust=True)
