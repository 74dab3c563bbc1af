"""Prediction history: one row per recorded prediction, written in bulk off the request path."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core import ids


class PredictionQuerySet(models.QuerySet):
    def visible_to(self, request):
        """A key sees only its own predictions; an admin session that may view, change or
        delete predictions sees all (which it may do is its route's check), other sessions none (access.permissions)."""
        from access.models import APIKey
        from access.permissions import sees_all

        if isinstance(request.auth, APIKey):
            return self.filter(api_key=request.auth)
        return self if sees_all(request, "inference.prediction") else self.none()

    def older_than(self, moment):
        return self.filter(created_at__lt=moment)


class Prediction(models.Model):
    """One recorded prediction.

    On PostgreSQL the table is partitioned by day of ``created_at`` (migration 0005,
    inference.history_partitions), and its primary key in the database is (id, created_at):
    PostgreSQL wants the partition key in every unique constraint. Django still knows ``id`` as
    the key (UUIDs with 62 random bits per millisecond: unique in practice). A new unique
    constraint here must include ``created_at`` too, and an index cannot be built CONCURRENTLY on
    the partitioned table.

    Every index is written for every row, so there are few (migration 0008): ids are
    time-ordered (UUID version 7, core.ids) so that the primary key grows at its right edge; the
    foreign keys to the model and the key have no index of their own, the composite indexes
    below start with them and serve their lookups (the history's filters, the deletes that
    cascade); the user's is partial, since almost every row has no user.
    """

    id = models.UUIDField(primary_key=True, default=ids.uuid7, editable=False)
    model = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="predictions", db_index=False)
    # The name and version at the time, kept for exports and for reading without a join.
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=64)
    # Named on the key so that access reads a key's use (its revoke page) without importing this app.
    api_key = models.ForeignKey(
        "access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions", db_index=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    input_data = models.JSONField(null=True, blank=True)
    input_truncated = models.BooleanField(default=False)
    output_data = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    cached = models.BooleanField(default=False)
    inference_time_ms = models.FloatField(help_text="ONNX Runtime compute time only.")
    total_time_ms = models.FloatField(help_text="Time spent in the server for the request.")
    created_at = models.DateTimeField(db_index=True)

    objects = PredictionQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=("model", "-created_at"), name="prediction_model_recent"),
            models.Index(fields=("api_key", "-created_at"), name="prediction_key_recent"),
            # A user's rows are found (SET_NULL when the user is deleted) without a row per prediction.
            models.Index(fields=("user",), condition=models.Q(user__isnull=False), name="prediction_user"),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}:{self.model_version} at {self.created_at:%Y-%m-%d %H:%M:%S}"


# Upper bounds (milliseconds) of the latency buckets of ServingMinute, and the column of each;
# the last bucket has no bound. Fixed, so rows of every process and every minute add up.
LATENCY_BOUNDS_MS = (0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, None)
LATENCY_FIELDS = tuple(
    "le_inf" if bound is None else "le_" + f"{bound:g}".replace(".", "_") for bound in LATENCY_BOUNDS_MS
)


class ServingMinuteQuerySet(models.QuerySet):
    def since(self, moment):
        return self.filter(minute__gte=moment)

    def older_than(self, moment):
        return self.filter(minute__lt=moment)


class ServingMinute(models.Model):
    """What one model version served in one minute, summed over every server process.

    Written by inference.serving_stats (in-process counters upserted with increments every
    few seconds), read by inference.stats. ``errors`` counts every answer that was not a 2xx;
    among them ``client_errors`` the 4xx (bad input, a key without the scope, throttled) and
    ``server_errors`` the 5xx (a failed run, a timeout, a full queue or a memory limit: what the
    health thresholds judge). Latency is the time in the server,
    counted per bucket: ``le_<bound>`` is the requests that took more than the previous bound
    and at most this many milliseconds (``le_inf``: longer than the last bound).
    """

    model = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="serving_minutes")
    minute = models.DateTimeField(help_text="The start of the minute (UTC).")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0, help_text="Answers that were not a 2xx.")
    client_errors = models.PositiveBigIntegerField(default=0, help_text="4xx answers: the caller's to fix.")
    server_errors = models.PositiveBigIntegerField(default=0, help_text="5xx answers: the server's to fix.")
    cache_hits = models.PositiveBigIntegerField(default=0)
    cache_misses = models.PositiveBigIntegerField(default=0)
    inferences = models.PositiveBigIntegerField(default=0, help_text="Requests answered by running the model.")
    executions = models.PositiveBigIntegerField(default=0, help_text="Session runs that answered them.")
    latency_sum_ms = models.FloatField(default=0.0)
    le_0_25 = models.PositiveBigIntegerField(default=0)
    le_0_5 = models.PositiveBigIntegerField(default=0)
    le_1 = models.PositiveBigIntegerField(default=0)
    le_2_5 = models.PositiveBigIntegerField(default=0)
    le_5 = models.PositiveBigIntegerField(default=0)
    le_10 = models.PositiveBigIntegerField(default=0)
    le_25 = models.PositiveBigIntegerField(default=0)
    le_50 = models.PositiveBigIntegerField(default=0)
    le_100 = models.PositiveBigIntegerField(default=0)
    le_250 = models.PositiveBigIntegerField(default=0)
    le_500 = models.PositiveBigIntegerField(default=0)
    le_1000 = models.PositiveBigIntegerField(default=0)
    le_2500 = models.PositiveBigIntegerField(default=0)
    le_5000 = models.PositiveBigIntegerField(default=0)
    le_10000 = models.PositiveBigIntegerField(default=0)
    le_inf = models.PositiveBigIntegerField(default=0)

    objects = ServingMinuteQuerySet.as_manager()

    class Meta:
        ordering = ("-minute",)
        constraints = [models.UniqueConstraint(fields=("model", "minute"), name="serving_minute_unique")]
        indexes = [models.Index(fields=("minute",), name="serving_minute_minute")]

    def __str__(self) -> str:
        return f"{self.model_id} at {self.minute:%Y-%m-%d %H:%M}"


class ShadowMinute(models.Model):
    """One minute of a shadow version's copies of an alias's traffic (inference.shadow): how
    many copies were made, dropped (the shadow queue was full) or failed, and per compared copy
    whether the outputs agreed with the primary's (labels equal, tensors within tolerance), the
    largest absolute and relative difference of tensor outputs, and both sides' latency."""

    primary = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="+")
    shadow = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="shadow_minutes")
    minute = models.DateTimeField(help_text="The start of the minute (UTC).")
    copies = models.PositiveBigIntegerField(default=0, help_text="Copies taken off the client's path.")
    dropped = models.PositiveBigIntegerField(default=0, help_text="Copies dropped: the shadow queue was full.")
    errors = models.PositiveBigIntegerField(
        default=0, help_text="Copies the shadow failed on (raised, timed out, not ready)."
    )
    compared = models.PositiveBigIntegerField(default=0)
    agreements = models.PositiveBigIntegerField(default=0)
    max_abs_diff = models.FloatField(default=0.0)
    max_rel_diff = models.FloatField(default=0.0)
    primary_latency_sum_ms = models.FloatField(default=0.0)
    shadow_latency_sum_ms = models.FloatField(default=0.0)

    objects = ServingMinuteQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=("primary", "shadow", "minute"), name="shadow_minute_unique"),
        ]
        indexes = [models.Index(fields=("minute",), name="shadow_minute_minute")]

    def __str__(self) -> str:
        return f"shadow {self.shadow_id} of {self.primary_id} at {self.minute:%Y-%m-%d %H:%M}"
