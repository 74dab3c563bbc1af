"""The registry's background work: model validation, on Celery with a broker, else on the
embedded runner's threads (jobs.runner), the same choice jobs make.

Thin: the task takes a model id and calls `services.model_validation_run`, which claims the
row with a conditional UPDATE, so a second delivery of one message (acks_late, a sweeper's
copy) does nothing.
"""

from __future__ import annotations

from functools import partial

from jobs.services import broker_configured
from modelforge_site.celery import app
from registry import services

# Bound to the project's app, not @shared_task (see jobs.tasks for why).


@app.task(name="registry.validate", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def validate_model(model_id: str) -> None:
    services.model_validation_run(model_id=model_id)


@app.task(name="registry.sweep_validations", ignore_result=True)
def sweep_validations() -> dict[str, int]:
    """Beat: hand over again the validations a down broker or a lost worker left behind."""
    return services.validations_sweep()


def submit_validation(model_id: str) -> None:
    """Queue one validation run: a Celery message, or a call on the embedded runner's threads.
    Raises whatever publishing raises (the caller leaves the row for the sweeper)."""
    if broker_configured():
        validate_model.apply_async(args=[model_id])
        return
    from jobs.runner import runner

    runner.submit_call(partial(services.model_validation_run, model_id=model_id))
