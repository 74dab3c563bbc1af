"""Prediction history: one row per recorded prediction, written in bulk off the request path."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class PredictionQuerySet(models.QuerySet):
    def visible_to(self, request):
        """A key sees only its own predictions; staff signed in to the admin see all."""
        from access.models import APIKey

        if isinstance(request.auth, APIKey):
            return self.filter(api_key=request.auth)
        if getattr(request.user, "is_staff", False):
            return self
        return self.none()

    def older_than(self, moment):
        return self.filter(created_at__lt=moment)


class Prediction(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="predictions")
    # The name and version at the time, kept for exports and for reading without a join.
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=64)
    api_key = models.ForeignKey("access.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
        ]

    def __str__(self) -> str:
        return f"{self.model_name}:{self.model_version} at {self.created_at:%Y-%m-%d %H:%M:%S}"
