"""Asynchronous inference jobs: one row per job, written by jobs.services only.

A job runs one model over an inline JSON input (one session run) or over an input file
(JSONL, CSV or .npy, streamed in chunks into a JSONL output file). Its files live in a folder
named after the job's id (jobs.storage), never after anything a client sent.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobQuerySet(models.QuerySet):
    def visible_to(self, request):
        """A key sees only its own jobs; an admin session that may view, change or delete
        jobs sees all (which it may do is its route's check), other sessions none (access.permissions)."""
        from access.models import APIKey
        from access.permissions import sees_all

        if isinstance(request.auth, APIKey):
            return self.filter(api_key=request.auth)
        return self if sees_all(request, "jobs.job") else self.none()

    def active(self):
        return self.filter(status__in=Job.ACTIVE)

    def terminal(self):
        return self.filter(status__in=Job.TERMINAL)

    def expired(self, *, before):
        """Finished jobs whose retention has run out."""
        return self.terminal().filter(finished_at__lt=before)

    def unsent(self, *, before):
        """Pending jobs created before ``before``: their hand-over to the broker failed."""
        return self.filter(status=Job.Status.PENDING, created_at__lt=before)

    def stale_queued(self, *, before):
        """Queued jobs whose message was published before ``before`` and never started."""
        return self.filter(status=Job.Status.QUEUED, enqueued_at__lt=before)

    def stuck_running(self, *, before):
        return self.filter(status=Job.Status.RUNNING, started_at__lt=before)


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Priority(models.TextChoices):
        HIGH = "high", "High"
        NORMAL = "normal", "Normal"
        LOW = "low", "Low"

    class InputFormat(models.TextChoices):
        JSON = "json", "Inline JSON"
        JSONL = "jsonl", "JSON Lines file"
        CSV = "csv", "CSV file"
        NPY = "npy", "NumPy .npy file"

    ACTIVE = (Status.PENDING, Status.QUEUED, Status.RUNNING)
    TERMINAL = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    # Failures of the job's own input, or of the model's outputs for it: another run of the same
    # job would fail the same way, so it is not offered (jobs.services.job_resubmit refuses it).
    REPEATING_FAILURES = ("invalid_row", "invalid_input_file", "unsupported_output")
    # Lower runs first (the embedded runner's ordering; Celery uses one queue per priority).
    PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The name and version are kept too: a job outlives the model version it ran.
    model = models.ForeignKey("registry.MLModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=64)
    # Named on the key so that access reads a key's use (its revoke page) without importing this app.
    api_key = models.ForeignKey("access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)

    input_format = models.CharField(max_length=10, choices=InputFormat.choices)
    input_data = models.JSONField(null=True, blank=True, help_text="The inputs of an inline job.")
    input_filename = models.CharField(
        max_length=255, blank=True, help_text="The client's name for the input file: a label, never a path."
    )
    input_size = models.BigIntegerField(null=True, blank=True, help_text="Bytes of the stored input file.")

    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs started, redeliveries and retries included.")
    worker = models.CharField(max_length=255, blank=True, help_text="The worker running (or that ran) the job.")

    output_data = models.JSONField(null=True, blank=True, help_text="The outputs of an inline job.")
    output_file = models.CharField(max_length=100, blank=True, help_text="The output file in the job's folder.")
    warnings = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    celery_task_id = models.CharField(max_length=255, blank=True)
    queue_time_ms = models.FloatField(null=True, blank=True, help_text="From creation to the first start.")
    inference_time_ms = models.FloatField(null=True, blank=True, help_text="ONNX Runtime compute time only.")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    enqueued_at = models.DateTimeField(
        null=True, blank=True, help_text="When a message was last handed over (for a retry: when it is due)."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=("api_key", "-created_at"), name="job_key_recent"),
            models.Index(fields=("status", "created_at"), name="job_status_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "queued", "running", "completed", "failed", "cancelled"]),
                name="job_status_valid",
            ),
            models.CheckConstraint(condition=Q(priority__in=["high", "normal", "low"]), name="job_priority_valid"),
            models.CheckConstraint(
                condition=Q(progress_done__gte=0) & Q(progress_done__lte=models.F("progress_total")),
                name="job_progress_in_range",
            ),
            models.CheckConstraint(
                condition=~Q(input_format="json") | Q(input_data__isnull=False), name="job_inline_has_input"
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(output_data__isnull=False) | ~Q(output_file=""),
                name="job_completed_has_output",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.model_name}:{self.model_version}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_retryable(self) -> bool:
        """Failed or cancelled, and not for a reason another run would meet again."""
        if self.status == self.Status.CANCELLED:
            return True
        return self.status == self.Status.FAILED and self.error_code not in self.REPEATING_FAILURES

    @property
    def is_batch(self) -> bool:
        return self.input_format != self.InputFormat.JSON

    @property
    def owner_label(self) -> str:
        if self.api_key_id:
            return f"key:{self.api_key.name}"
        if self.user_id:
            return self.user.get_username()
        return ""
