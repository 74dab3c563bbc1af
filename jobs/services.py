"""Every write to a job goes through here: the API, the admin, the Celery tasks and the
embedded runner alike.

A job runs on a Celery worker (task `jobs.run`, jobs.tasks, sent by name) or, without a broker,
on the embedded runner's threads (core.embedded_runner) as an `EmbeddedJob`: the same claim,
run and failure record in both.

Delivery is at least once (a message can be redelivered after a worker dies, the sweeper may
publish a second copy), so each step is a compare-and-set on the row:

- every status change is `_move`, one conditional UPDATE from the statuses it may leave, and for
  a run also at the attempt it belongs to;
- a run starts with `job_claim` (attempts + 1), and everything the run writes afterwards
  (progress, the result, a failure) applies only while the row is still running *that* attempt,
  so a cancelled or taken-over run stops at its next chunk and never writes a result;
- the result is written once: output files are named per attempt, and only the attempt whose
  final UPDATE succeeds has its file named on the row.

Slow work (reading files, running the model) happens outside transactions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django_celery_results.models import TaskResult

from core import events as domain_events
from core.celery_app import app as celery_app
from core.celery_app import broker_configured
from core.embedded_runner import runner
from core.exceptions import DomainError
from inference.errors import InferenceFailed, ModelFileUnavailable
from inference.services import decode_model_inputs, ensure_servable, run_session
from inference.tensors import encode_outputs
from jobs import batch_io, events
from jobs.errors import JobFinished, JobNotFinished, JobNotFound, ModelDeleted, NotRetryable
from jobs.models import Job
from jobs.storage import job_files, stored_job_ids, temp_dir
from registry.errors import StorageUnavailable
from registry.models import MLModel

logger = logging.getLogger(__name__)
Status = Job.Status

# The status machine, enforced by `_move`. RUNNING -> QUEUED is a transient failure waiting for
# its retry; RUNNING -> RUNNING is a redelivered message taking over from a lost worker.
MOVES: dict[str, set[str]] = {
    Status.PENDING: {Status.QUEUED, Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.QUEUED: {Status.RUNNING, Status.CANCELLED, Status.FAILED},
    Status.RUNNING: {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.QUEUED, Status.RUNNING},
}

# Errors that say nothing about the job itself: the database, the network or the bucket went
# away for a moment, or this worker could not read the model's file (its view of the storage is
# checked independently: the next attempt finds the model ready again, or not ready with the
# reason). Everything else (bad input, a model that refuses the rows, a bug) fails at once.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    StorageUnavailable,
    ModelFileUnavailable,
)

SWEEP_BATCH = 500

# The Celery task that runs a job (jobs.tasks.run_job). Sent by name: that module calls this one.
RUN_TASK = "jobs.run"

# A test seam: called in the embedded runner's thread with each job it has claimed, just before
# the run. Tests set it to make a thread die for real in the middle of a job.
before_run: Callable[[Job], None] | None = None


class JobSuperseded(Exception):
    """This run no longer holds the job (it was cancelled, or a redelivery took it over):
    stop and record nothing."""


class JobTimeLimit(Exception):
    """The embedded runner's soft time limit (Celery raises SoftTimeLimitExceeded instead)."""


def _move(job_id, *, source, target: str, attempt: int | None = None, **fields: Any) -> bool:
    """The only status change: ``source`` -> ``target`` as one conditional UPDATE.

    Returns whether the row moved. With ``attempt``, the row must also still be at that attempt.
    """
    source = [source] if isinstance(source, str) else list(source)
    for status in source:
        if target not in MOVES.get(status, ()):
            raise ValueError(f"a job cannot go from {status} to {target}")
    rows = Job.objects.filter(pk=job_id, status__in=source)
    if attempt is not None:
        rows = rows.filter(attempts=attempt)
    moved = bool(rows.update(status=target, **fields))
    if moved and target in Job.TERMINAL:
        transaction.on_commit(partial(events.job_finished, job_id), robust=True)
        if target in (Status.COMPLETED, Status.FAILED):
            _emit_finished(job_id)
    return moved


def _emit_finished(job_id) -> None:
    """`job.completed` or `job.failed` (webhooks), sent once the move commits."""
    job = Job.objects.filter(pk=job_id).values(
        "status", "model_name", "model_version", "progress_done", "progress_total", "warnings", "error_code"
    )[0]
    data = {"job_id": str(job_id), **job, "warnings": len(job["warnings"] or [])}
    domain_events.emit("job.completed" if job["status"] == Status.COMPLETED else "job.failed", data)


# --- create ---------------------------------------------------------------------------------


def job_create(
    *,
    model: MLModel,
    priority: str = Job.Priority.NORMAL,
    input_data: Any = None,
    input_file=None,
    input_format: str | None = None,
    api_key=None,
    user=None,
) -> Job:
    """Validate a job's input against the model, store it, and queue the job once committed.

    Exactly one of ``input_data`` (inline, validated exactly as predict validates it) or
    ``input_file`` (an uploaded file: its format, row count and first row are checked here,
    the other rows as the job runs). Raises the model's and the input's domain errors (400,
    404, 409), and StorageUnavailable (503) when the bucket holding job files fails. The job
    is queued after the commit; if the broker is down it stays pending and the sweeper queues
    it later.
    """
    ensure_servable(model)
    job = Job(
        model=model,
        model_name=model.name,
        model_version=model.version,
        priority=priority,
        api_key=api_key,
        user=user if api_key is None else None,
    )
    staged: Path | None = None
    if input_file is None:
        job.input_format = Job.InputFormat.JSON
        job.input_data = input_data
        job.progress_total = batch_io.check_inline(input_data, model)
    else:
        job.input_format = batch_io.detect_format(input_format, input_file.name)
        staged = Path(input_file.temporary_file_path())
        job.progress_total = batch_io.inspect_file(staged, job.input_format, model).rows
        job.input_filename = (input_file.name or "")[:255]
        job.input_size = input_file.size
    job.full_clean(validate_unique=False, validate_constraints=False)

    # Stored before the row is written (a bucket that fails is a 503 and leaves no job); a
    # crash in between leaves files no row names, which the retention removes.
    if staged is not None:
        job_files(job.pk).store_input(staged, job.input_format)
        input_file.close()  # its temporary file has moved: nothing left for it to delete
    return _insert(job)


def job_resubmit(*, job: Job) -> Job:
    """Run a failed or cancelled job again, as a new job with the same model, input, priority
    and owner. The old job stays as it ended: a finished job never runs twice. A job that failed
    on its input (Job.REPEATING_FAILURES) is refused: it would fail again."""
    if job.status not in (Status.FAILED, Status.CANCELLED):
        raise NotRetryable(f"Only failed or cancelled jobs can be retried; this one is {job.status}.")
    if not job.is_retryable:
        raise NotRetryable(
            f"This job failed on its input ({job.error_code}): another run would fail the same way. Fix the input "
            "and create a new job."
        )
    model = MLModel.objects.filter(pk=job.model_id).first()
    if model is None:
        raise ModelDeleted(f"Model {job.model_name}:{job.model_version} has been deleted.")
    ensure_servable(model)
    copy = Job(
        model=model,
        model_name=model.name,
        model_version=model.version,
        priority=job.priority,
        api_key_id=job.api_key_id,
        user_id=job.user_id,
        input_format=job.input_format,
        input_data=job.input_data,
        input_filename=job.input_filename,
        input_size=job.input_size,
        progress_total=job.progress_total,
    )
    if job.is_batch:
        job_files(copy.pk).share_input(job_files(job.pk), job.input_format)
    return _insert(copy)


def _insert(job: Job) -> Job:
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            # Queued only once the row is visible to workers; a failure to queue leaves the
            # job pending for the sweeper, never an error for the client.
            transaction.on_commit(partial(job_enqueue, job_id=job.pk), robust=True)
    except BaseException:
        if job.is_batch:
            _remove_files(job.pk)
        raise
    job.refresh_from_db()
    logger.info("job created", extra={"job": str(job.pk), "format": job.input_format, "rows": job.progress_total})
    return job


def job_enqueue(*, job_id, countdown: float | None = None) -> bool:
    """Hand a pending or queued job to its queue: the broker's queue for its priority, or the
    embedded runner. Returns whether it was handed over.

    A broker that cannot be reached leaves the job pending for the sweeper. A second message
    for one job is harmless: only one delivery can claim it.
    """
    job = Job.objects.filter(pk=job_id, status__in=[Status.PENDING, Status.QUEUED]).only("pk", "priority").first()
    if job is None:
        return False
    now = timezone.now()
    fields: dict[str, Any] = {"enqueued_at": now}
    if broker_configured():
        try:
            celery_app.send_task(
                RUN_TASK, args=[str(job.pk)], task_id=str(job.pk), queue=job.priority, countdown=countdown
            )
        except Exception as exc:
            logger.warning(
                "could not queue a job (%s); the sweeper retries", exc, extra={"job": str(job.pk), "error": repr(exc)}
            )
            return False
        fields["celery_task_id"] = str(job.pk)
    else:
        runner.submit(EmbeddedJob(str(job.pk), job.priority), rank=Job.PRIORITY_RANK[job.priority], delay=countdown)
        fields["worker"] = runner.name  # the process that holds it, for recovery if it ends
    if not _move(job.pk, source=Status.PENDING, target=Status.QUEUED, **fields):
        Job.objects.filter(pk=job.pk, status=Status.QUEUED).update(**fields)  # queued again: no status change
    return True


# --- run ------------------------------------------------------------------------------------


def job_claim(*, job_id, worker: str, redelivered: bool = False) -> Job | None:
    """Take a job to run it: pending or queued -> running, with attempts + 1, as one
    compare-and-set on (status, attempts).

    A message the broker *redelivered* (its worker was lost mid-run) may also take over a
    running job. ``None`` means do nothing: the job is finished, cancelled, deleted, or another
    delivery holds it. A job that has used up JOB_MAX_ATTEMPTS fails instead, so a job that
    kills its worker every time is not redelivered for ever.
    """
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return None
    claimable = [Status.PENDING, Status.QUEUED] + ([Status.RUNNING] if redelivered else [])
    if job.status not in claimable:
        return None
    now = timezone.now()
    if job.attempts >= settings.JOB_MAX_ATTEMPTS:
        _move(
            job.pk,
            source=claimable,
            target=Status.FAILED,
            attempt=job.attempts,
            error_code="attempts_exhausted",
            error_message=f"Gave up after {job.attempts} attempts: no run finished (its worker was lost each time).",
            finished_at=now,
        )
        return None
    fields: dict[str, Any] = {
        "attempts": job.attempts + 1,
        "worker": worker[:255],
        "started_at": now,
        "progress_done": 0,
    }
    if job.queue_time_ms is None:
        fields["queue_time_ms"] = round((now - job.created_at).total_seconds() * 1000, 3)
    # Any claimable status will do: the attempt count is the token. (Pinning the status read
    # above would lose the race with job_enqueue moving the job from pending to queued.)
    if not _move(job.pk, source=claimable, target=Status.RUNNING, attempt=job.attempts, **fields):
        return None
    for name, value in fields.items():
        setattr(job, name, value)
    job.status = Status.RUNNING
    logger.info("job started", extra={"job": str(job.pk), "attempt": job.attempts, "worker": worker})
    return job


def job_execute(*, job: Job, deadline: float | None = None) -> None:
    """Run a claimed job to the end and record its result.

    Raises `JobSuperseded` when the run lost the job (cancelled, or taken over), a domain
    error for input the model cannot take (a bad row names itself), `JobTimeLimit` past
    ``deadline`` (a `time.monotonic()` value), and anything else for `job_record_failure`.
    """
    model = MLModel.objects.filter(pk=job.model_id).first()
    if model is None:
        raise ModelDeleted(f"Model {job.model_name}:{job.model_version} was deleted before the job ran.")
    ensure_servable(model)
    if job.is_batch:
        _run_batch(job, model, deadline)
    else:
        _run_inline(job, model)


def _run_inline(job: Job, model: MLModel) -> None:
    feeds = decode_model_inputs(model, job.input_data)
    names, values, compute_ms = run_session(model, feeds)
    output_data, warnings = encode_outputs(names, values, model.output_schema)
    completed = _move(
        job.pk,
        source=Status.RUNNING,
        target=Status.COMPLETED,
        attempt=job.attempts,
        output_data=output_data,
        warnings=warnings,
        inference_time_ms=round(compute_ms, 3),
        progress_done=F("progress_total"),
        error_message="",  # a note left by a retried attempt
        finished_at=timezone.now(),
    )
    if not completed:
        raise JobSuperseded()
    logger.info("job completed", extra={"job": str(job.pk), "attempt": job.attempts})


def _run_batch(job: Job, model: MLModel, deadline: float | None) -> None:
    files = job_files(job.pk)
    output_name = files.output_name(job.attempts)
    writer = batch_io.OutputWriter(files.output_sink(output_name))
    compute_ms = 0.0
    done = 0
    try:
        with (
            files.open_input(job.input_format) as source,
            contextlib.closing(
                batch_io.read_chunks(source, job.input_format, model, batch_io.chunk_rows_for(model))
            ) as chunks,
            batch_io.garbage_collection_paused(),
        ):
            for chunk in chunks:
                feeds = batch_io.decode_chunk(chunk, model)
                try:
                    names, values, milliseconds = run_session(model, feeds)
                except InferenceFailed as exc:
                    last = chunk.first_row + chunk.rows - 1
                    raise InferenceFailed(f"Rows {chunk.first_row}-{last}: {exc.detail}") from exc
                compute_ms += milliseconds
                writer.write(names, values, model.output_schema, rows=chunk.rows)
                done += chunk.rows
                _save_progress(job, done)
                if deadline is not None and time.monotonic() > deadline:
                    raise JobTimeLimit()
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    # Before the job shows as completed: whoever sees it completed sees its one output file.
    if job.attempts > 1:
        files.discard_earlier_outputs(job.attempts)
    completed = _move(
        job.pk,
        source=Status.RUNNING,
        target=Status.COMPLETED,
        attempt=job.attempts,
        output_file=output_name,
        progress_done=done,
        progress_total=done,
        inference_time_ms=round(compute_ms, 3),
        warnings=writer.warnings,
        error_message="",  # a note left by a retried attempt
        finished_at=timezone.now(),
    )
    if not completed:
        files.discard_output(output_name)
        raise JobSuperseded()
    logger.info("job completed", extra={"job": str(job.pk), "attempt": job.attempts, "rows": done})


def _save_progress(job: Job, done: int) -> None:
    """Progress after each chunk; also how a run learns it was cancelled or taken over."""
    saved = Job.objects.filter(pk=job.pk, status=Status.RUNNING, attempts=job.attempts).update(
        progress_done=done, progress_total=Greatest(F("progress_total"), Value(done))
    )
    if not saved:
        raise JobSuperseded()


def job_record_failure(*, job: Job, exc: BaseException) -> float | None:
    """Record why a run ended without a result.

    A transient error (the database or the network went away) puts the job back in the queue
    while attempts remain, and returns the delay before the next try (exponential backoff:
    JOB_RETRY_BACKOFF_SECONDS doubled per attempt, at most JOB_RETRY_BACKOFF_MAX_SECONDS).
    Anything else fails the job at once with a code and a message (and, for unexpected errors,
    the traceback, shown to staff only). Returns None when there is nothing to retry.
    """
    if isinstance(exc, DatabaseError) and not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()  # reconnect, so this write is not lost too
    now = timezone.now()
    if isinstance(exc, TRANSIENT_ERRORS) and job.attempts < settings.JOB_MAX_ATTEMPTS:
        delay = min(
            settings.JOB_RETRY_BACKOFF_SECONDS * 2 ** max(job.attempts - 1, 0), settings.JOB_RETRY_BACKOFF_MAX_SECONDS
        )
        moved = _move(
            job.pk,
            source=Status.RUNNING,
            target=Status.QUEUED,
            attempt=job.attempts,
            enqueued_at=now + timedelta(seconds=delay),
            error_message=f"Attempt {job.attempts} failed ({_describe(exc)}); retrying in {delay:g} s.",
        )
        logger.warning("job will be retried", extra={"job": str(job.pk), "attempt": job.attempts, "delay": delay})
        return delay if moved else None
    code, message, trace = _failure(job, exc)
    failed = _move(
        job.pk,
        source=Status.RUNNING,
        target=Status.FAILED,
        attempt=job.attempts,
        error_code=code,
        error_message=message,
        traceback=trace,
        finished_at=now,
    )
    if failed:
        log = logger.error if code == "internal_error" else logger.info
        log("job failed", extra={"job": str(job.pk), "code": code})
    return None


def _failure(job: Job, exc: BaseException) -> tuple[str, str, str]:
    if isinstance(exc, (JobTimeLimit, SoftTimeLimitExceeded)):
        return (
            "time_limit_exceeded",
            f"The job ran past its time limit ({settings.CELERY_TASK_SOFT_TIME_LIMIT} s, "
            "JOB_SOFT_TIME_LIMIT_SECONDS) and was stopped. Split the input into smaller jobs.",
            "",
        )
    if isinstance(exc, DomainError):
        return exc.code, exc.detail[:5000], ""
    trace = "".join(traceback.format_exception(exc))[-20_000:]
    if isinstance(exc, TRANSIENT_ERRORS):
        return "attempts_exhausted", f"Gave up after {job.attempts} attempts; the last: {_describe(exc)}.", trace
    return "internal_error", f"The job failed unexpectedly ({_describe(exc)}); it has been logged.", trace


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text[:300]}" if text else exc.__class__.__name__


def job_requeue(*, job: Job) -> bool:
    """Put a running job back in the queue because the process running it ended (the embedded
    runner's server process); its next run is a new attempt. Returns whether it moved."""
    return _move(job.pk, source=Status.RUNNING, target=Status.QUEUED, attempt=job.attempts, enqueued_at=timezone.now())


@dataclass(frozen=True)
class EmbeddedJob:
    """A job on the embedded runner's threads: what the Celery task does (claim, run, record a
    failure and retry it later), with the soft time limit checked between chunks."""

    job_id: str
    priority: str

    def __call__(self) -> None:
        job = job_claim(job_id=self.job_id, worker=runner.name)
        if job is None:
            return
        if before_run is not None:
            before_run(job)
        try:
            job_execute(job=job, deadline=time.monotonic() + settings.CELERY_TASK_SOFT_TIME_LIMIT)
        except JobSuperseded:
            return
        except Exception as exc:
            delay = job_record_failure(job=job, exc=exc)
            if delay is not None:
                runner.submit(self, rank=Job.PRIORITY_RANK[self.priority], delay=delay)

    def lost(self) -> None:
        """The thread running this job died: queue it again, as a new attempt (as after a lost
        Celery worker). If the database cannot be reached now, `jobs_recover` does it later."""
        job = Job.objects.filter(pk=self.job_id, status=Status.RUNNING, worker=runner.name).first()
        if job is not None and job_requeue(job=job):
            job_enqueue(job_id=job.pk)
            logger.warning("job of a dead embedded runner thread queued again", extra={"job": self.job_id})


# --- cancel, delete, wait ------------------------------------------------------------------


def job_cancel(*, job: Job) -> Job:
    """Cancel a job: one not yet running never runs; a running one stops at its next chunk, and
    on Celery its task is also revoked, which ends the run at once. Cancelling a cancelled job
    is a no-op; a completed or failed one is a 409."""
    moved = _move(job.pk, source=Job.ACTIVE, target=Status.CANCELLED, finished_at=timezone.now())
    job.refresh_from_db()
    if not moved and job.status != Status.CANCELLED:
        raise JobFinished(f"The job has already {job.status}; only pending, queued or running jobs can be cancelled.")
    if moved and broker_configured():
        transaction.on_commit(partial(_revoke, job.pk), robust=True)
    return job


def _revoke(job_id) -> None:
    try:
        celery_app.control.revoke(str(job_id), terminate=True, signal="SIGTERM")
    except Exception as exc:  # the run still stops at its next chunk
        logger.warning("could not revoke a cancelled job's task", extra={"job": str(job_id), "error": repr(exc)})


def job_delete(*, job: Job) -> None:
    """Delete a finished job, its files and its Celery result. A job still pending, queued or
    running must be cancelled first (409)."""
    if not job.is_terminal:
        raise JobNotFinished(f"The job is {job.status}; cancel it first, then delete it.")
    with transaction.atomic():
        Job.objects.filter(pk=job.pk, status__in=Job.TERMINAL).delete()
        TaskResult.objects.filter(task_id=str(job.pk)).delete()
        if job.is_batch:
            transaction.on_commit(partial(_remove_files, job.pk))


def _remove_files(job_id) -> bool:
    """Remove a job's files once its row is gone (or was never written). A bucket that fails
    leaves them behind, logged: the retention finds files no row names and removes them."""
    try:
        return job_files(job_id).remove()
    except StorageUnavailable:
        logger.warning("job files left behind: the storage is unavailable", extra={"job": str(job_id)})
        return False


def job_wait(*, job: Job, timeout: float) -> Job:
    """The job once it has finished, or as it is after ``timeout`` seconds.

    Woken at once by the finish notification (jobs.events); between wake-ups the row is read
    again with growing pauses (0.1 s doubling to 2 s), never in a tight loop.
    """
    if timeout <= 0 or job.is_terminal:
        return job
    deadline = time.monotonic() + timeout
    pause = 0.1
    with events.waiting_for(job.pk) as finished:
        while True:
            status = Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()
            left = deadline - time.monotonic()
            if status is None or status in Job.TERMINAL or left <= 0:
                break
            finished.wait(min(pause, left))
            pause = min(pause * 2, 2.0)
    try:
        job.refresh_from_db()
    except Job.DoesNotExist:
        raise JobNotFound("The job was deleted while waiting for it.") from None
    return job


# --- maintenance (Celery beat, or the embedded runner's timer) -------------------------------


def jobs_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Repair what a lost broker or worker left behind:

    - pending jobs older than JOB_ENQUEUE_GRACE_SECONDS (the broker was down when they were
      created) are queued again;
    - queued jobs whose message is older than JOB_REQUEUE_AFTER_SECONDS without a start (the
      broker lost it) get a new message;
    - running jobs started more than JOB_STUCK_AFTER_SECONDS ago fail: past the hard time limit
      no run can still be alive, and past the visibility timeout the broker will not redeliver.
    """
    now = now or timezone.now()
    report = {"enqueued": 0, "requeued": 0, "failed": 0}
    unsent = Job.objects.unsent(before=now - timedelta(seconds=settings.JOB_ENQUEUE_GRACE_SECONDS))
    for job_id in list(unsent.order_by("created_at").values_list("pk", flat=True)[:SWEEP_BATCH]):
        report["enqueued"] += job_enqueue(job_id=job_id)
    stale = Job.objects.stale_queued(before=now - timedelta(seconds=settings.JOB_REQUEUE_AFTER_SECONDS))
    for job_id in list(stale.order_by("enqueued_at").values_list("pk", flat=True)[:SWEEP_BATCH]):
        report["requeued"] += job_enqueue(job_id=job_id)
    stuck = Job.objects.stuck_running(before=now - timedelta(seconds=settings.JOB_STUCK_AFTER_SECONDS))
    for job in list(stuck.only("pk", "attempts", "started_at")[:SWEEP_BATCH]):
        report["failed"] += _move(
            job.pk,
            source=Status.RUNNING,
            target=Status.FAILED,
            attempt=job.attempts,
            error_code="worker_lost",
            error_message=(
                f"The job was still running {settings.JOB_STUCK_AFTER_SECONDS} s after it started, longer than "
                "any run may last (JOB_TIME_LIMIT_SECONDS): its worker was lost."
            ),
            finished_at=now,
        )
    if any(report.values()):
        logger.info("jobs swept", extra=report)
    return report


def jobs_recover() -> int:
    """Queue on this process's embedded runner the jobs that another, ended server process on
    this host held, and those running under this process's name that none of its threads holds
    (a thread died and its job could not be queued again then). Returns how many."""
    prefix = f"embedded@{socket.gethostname()}:"
    fields = ("pk", "status", "attempts", "worker")
    held = (
        Job.objects.filter(status__in=[Status.QUEUED, Status.RUNNING], worker__startswith=prefix)
        .exclude(worker=runner.name)
        .only(*fields)
    )
    holding = {work.job_id for work in runner.held() if isinstance(work, EmbeddedJob)}
    running_here = Job.objects.filter(status=Status.RUNNING, worker=runner.name).only(*fields)
    orphans = [job for job in running_here if str(job.pk) not in holding]
    recovered = 0
    for job in [*held, *orphans]:
        if job.worker != runner.name and _process_alive(job.worker.rpartition(":")[2]):
            continue
        if job.status == Status.RUNNING and not job_requeue(job=job):
            continue
        recovered += job_enqueue(job_id=job.pk)
    if recovered:
        logger.info("jobs of ended server processes queued again", extra={"count": recovered})
    return recovered


def _process_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def jobs_cleanup(*, now: datetime | None = None) -> dict[str, int]:
    """Delete finished jobs older than JOB_RETENTION_DAYS with their files and Celery results,
    and job files no row refers to any more (left by a crash between storing and saving, or
    by a delete while the bucket was down).

    Expired jobs come from the database (a folder or a prefix each, no listing); the files of
    jobs without a row are found by listing the store (`stored_job_ids`, page by page in the
    bucket), and only those unchanged for the whole retention period are candidates.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.JOB_RETENTION_DAYS)
    report = {"jobs": 0, "orphan_folders": 0}
    while True:
        expired = Job.objects.expired(before=cutoff).values_list("pk", "input_format")
        batch = dict(expired[:SWEEP_BATCH])
        if not batch:
            break
        with transaction.atomic():
            deleted, _ = Job.objects.expired(before=cutoff).filter(pk__in=list(batch)).delete()
            TaskResult.objects.filter(task_id__in=[str(pk) for pk in batch]).delete()
        for pk, input_format in batch.items():
            if input_format != Job.InputFormat.JSON:  # inline jobs have no files
                _remove_files(pk)
        report["jobs"] += deleted
    try:
        found = stored_job_ids(older_than=cutoff.timestamp())
        while part := set(islice(found, SWEEP_BATCH)):
            known = set(Job.objects.filter(pk__in=list(part)).values_list("pk", flat=True))
            for job_id in part - known:
                report["orphan_folders"] += job_files(job_id).remove()
    except StorageUnavailable:
        logger.warning("job files without a job were not looked for: the storage is unavailable")
    for leftover in temp_dir().glob("*.upload"):
        if leftover.stat().st_mtime < (now - timedelta(days=1)).timestamp():
            leftover.unlink(missing_ok=True)
    if any(report.values()):
        logger.info("jobs cleaned up", extra=report)
    return report
