"""The registry's background work on Celery: model validation, the confirmation of a model file
a node could not read, and the sweeper beat runs. Without a broker the same services run on the
embedded runner's threads instead (`services.validation_enqueue`,
`services.model_file_confirm_enqueue`).

Thin: each task takes ids and calls a service. `model_validation_run` claims the row with a
conditional UPDATE, so a second delivery of one message (acks_late, a sweeper's copy) does
nothing; `model_file_confirm` moves only a model still ready with that file. Bound to the
project's app (core.celery_app says why not @shared_task).
"""

from __future__ import annotations

from core.celery_app import app
from registry import services


@app.task(name=services.VALIDATE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def validate_model(model_id: str) -> None:
    services.model_validation_run(model_id=model_id)


@app.task(name=services.CONFIRM_FILE_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def confirm_model_file(model_id: str, sha256: str) -> str:
    """A node could not read this model's file: read it here, from the storage, and mark the
    model `error` only if it is really missing or changed."""
    return services.model_file_confirm(model_id=model_id, sha256=sha256)


@app.task(name="registry.sweep_validations", ignore_result=True)
def sweep_validations() -> dict[str, int]:
    """Beat: hand over again the validations a down broker or a lost worker left behind."""
    return services.validations_sweep()
