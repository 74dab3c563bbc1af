"""The registry's background work on Celery: model validation, and the sweeper beat runs.
Without a broker the same service runs on the embedded runner's threads instead
(`services.validation_enqueue`).

Thin: the task takes a model id and calls `services.model_validation_run`, which claims the
row with a conditional UPDATE, so a second delivery of one message (acks_late, a sweeper's
copy) does nothing. Bound to the project's app (core.celery_app says why not @shared_task).
"""

from __future__ import annotations

from core.celery_app import app
from registry import services


@app.task(name=services.VALIDATE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def validate_model(model_id: str) -> None:
    services.model_validation_run(model_id=model_id)


@app.task(name="registry.sweep_validations", ignore_result=True)
def sweep_validations() -> dict[str, int]:
    """Beat: hand over again the validations a down broker or a lost worker left behind."""
    return services.validations_sweep()
