"""Celery tasks. Thin: claim the row, call a service, record a failure through a service.
Bound to the project's app (core.celery_app says why not @shared_task).

Messages are acknowledged late and rejected (requeued) when the worker process dies, so a job
is delivered at least once; `services.job_claim` makes running it idempotent. A job's result
lives on its row; a delivery that finds nothing to do is ignored (no task state is stored, so
the job's one result in django-celery-results is never overwritten by a duplicate).
"""

from __future__ import annotations

from celery.exceptions import Ignore

from core.celery_app import app
from jobs import services


@app.task(bind=True, name=services.RUN_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job(self, job_id: str) -> str:
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    job = services.job_claim(job_id=job_id, worker=self.request.hostname or "", redelivered=redelivered)
    if job is None:
        raise Ignore()  # finished, cancelled, deleted, or another delivery holds it
    try:
        services.job_execute(job=job)
    except services.JobSuperseded:
        raise Ignore() from None
    except Exception as exc:  # SoftTimeLimitExceeded included: the service tells them apart
        delay = services.job_record_failure(job=job, exc=exc)
        if delay is not None:
            raise self.retry(countdown=delay, exc=exc) from exc
        return "failed"
    return "completed"


@app.task(name="jobs.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Beat: queue again what the broker lost, fail what a lost worker left running."""
    return services.jobs_sweep()


@app.task(name="jobs.cleanup", ignore_result=True)
def cleanup() -> dict[str, int]:
    """Beat: delete finished jobs (and their files) older than JOB_RETENTION_DAYS."""
    return services.jobs_cleanup()
