from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def _rate(field_help: str) -> models.FloatField:
    return models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=f"{field_help} (0 to 1; empty: the deployment's default).",
    )


def _ms(field_help: str) -> models.FloatField:
    return models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(600_000.0)],
        help_text=f"{field_help} in milliseconds (empty: the deployment's default).",
    )


class Thresholds(models.Model):
    """When a model name's versions are amber or red, per name; an empty field takes the
    deployment's default (settings.MONITOR_*, documented in the README). A version is red when
    its error rate or p95 reaches the red threshold, amber when it reaches amber, green
    otherwise, and idle below ``min_requests`` requests in the window."""

    name = models.CharField(max_length=100, unique=True, help_text="The model name these thresholds apply to.")
    error_rate_amber = _rate("Server-error rate at which a version is amber")
    error_rate_red = _rate("Server-error rate at which a version is red")
    p95_amber_ms = _ms("p95 latency at which a version is amber")
    p95_red_ms = _ms("p95 latency at which a version is red")
    min_requests = models.PositiveIntegerField(
        null=True, blank=True, help_text="Fewer requests in the window: no judgement (empty: the default)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "thresholds"
        verbose_name_plural = "thresholds"
        ordering = ("name",)

    def __str__(self) -> str:
        return f"thresholds of {self.name}"

    def effective(self) -> dict[str, float]:
        """Every threshold, the model's own where set, else the default."""
        return {
            field: getattr(self, field) if getattr(self, field) is not None else default
            for field, default in defaults().items()
        }


def defaults() -> dict[str, float]:
    return {
        "error_rate_amber": settings.MONITOR_ERROR_RATE_AMBER,
        "error_rate_red": settings.MONITOR_ERROR_RATE_RED,
        "p95_amber_ms": settings.MONITOR_P95_AMBER_MS,
        "p95_red_ms": settings.MONITOR_P95_RED_MS,
        "min_requests": settings.MONITOR_MIN_REQUESTS,
    }


class ThresholdState(models.Model):
    """The last level the threshold watch judged for a version (monitoring.threshold_watch):
    what it compares the next judgement with to raise `threshold.crossed` once per change."""

    model = models.OneToOneField("registry.MLModel", on_delete=models.CASCADE, related_name="threshold_state")
    level = models.CharField(max_length=10)
    reason = models.CharField(max_length=300, blank=True)
    changed_at = models.DateTimeField()

    class Meta:
        verbose_name = "threshold state"

    def __str__(self) -> str:
        return f"{self.model_id}: {self.level}"
