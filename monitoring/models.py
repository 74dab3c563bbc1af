from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
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
    # Drift (monitoring.drift): see drift_defaults for the deployment's defaults.
    drift_psi_amber = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001), MaxValueValidator(10.0)],
        help_text="PSI at which a feature is amber, with a significant test (0.001 to 10; empty: the default).",
    )
    drift_psi_red = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001), MaxValueValidator(10.0)],
        help_text="PSI at which a feature is red, with a significant test (0.001 to 10; empty: the default).",
    )
    drift_p_value = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1e-12), MaxValueValidator(0.5)],
        help_text="A feature drifts only if its test's p-value is below this (up to 0.5; empty: the default).",
    )
    drift_min_rows = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(10_000_000)],
        help_text="Fewer samples in a window: drift is not judged (empty: the default).",
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

    def drift_effective(self) -> dict[str, float]:
        """Every drift threshold, the model's own where set, else the default."""
        return {
            field: getattr(self, f"drift_{field}") if getattr(self, f"drift_{field}") is not None else default
            for field, default in drift_defaults().items()
        }

    def clean(self) -> None:
        super().clean()
        effective = self.drift_effective()
        if effective["psi_amber"] > effective["psi_red"]:
            raise ValidationError(
                {
                    "drift_psi_amber": f"The amber PSI ({effective['psi_amber']:g}) must not be above the red one "
                    f"({effective['psi_red']:g})."
                }
            )


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


def drift_defaults() -> dict[str, float]:
    return {
        "psi_amber": settings.DRIFT_PSI_AMBER,
        "psi_red": settings.DRIFT_PSI_RED,
        "p_value": settings.DRIFT_P_VALUE,
        "min_rows": settings.DRIFT_MIN_ROWS,
    }


# --- drift ------------------------------------------------------------------------------------


class Reference(models.Model):
    """What a model version was built for: its inputs and outputs summarised once
    (monitoring.reference), from a reference file or its first recorded predictions."""

    class Source(models.TextChoices):
        FILE = "file", "reference file"
        PREDICTIONS = "predictions", "first recorded predictions"

    model = models.OneToOneField("registry.MLModel", on_delete=models.CASCADE, related_name="drift_reference")
    source = models.CharField(max_length=20, choices=Source.choices)
    filename = models.CharField(max_length=255, blank=True)
    rows = models.PositiveBigIntegerField(help_text="Samples summarised (rows of the file, or of the predictions).")
    summary = models.JSONField(help_text="Per feature: bins and counts, or class frequencies, and statistics.")
    # A reference file given with the model's upload is summarised once the version is ready
    # (monitoring.services.pending_reference_build); one that does not fit its inputs is kept
    # as a failed reference (no features, no drift) saying why, until replaced or deleted.
    error_code = models.CharField(max_length=50, blank=True, help_text="Why the reference file was refused.")
    error = models.TextField(blank=True, help_text="What does not fit, naming the column, input or row.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-updated_at",)

    def __str__(self) -> str:
        return f"reference of {self.model_id}"

    @property
    def features(self) -> list[dict]:
        return self.summary.get("features", [])

    @property
    def status(self) -> str:
        return "failed" if self.error_code else "ready"


class DriftLevel(models.TextChoices):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    IDLE = "idle"  # too few samples in the window to judge


class DriftResult(models.Model):
    """The latest drift of one version over one window (DRIFT_WINDOWS), written by the periodic
    computation (monitoring.drift). ``level`` is this run's; ``state`` is the last judged one
    (green, amber or red: an idle run keeps it), whose changes raise drift.raised and
    drift.cleared."""

    model = models.ForeignKey("registry.MLModel", on_delete=models.CASCADE, related_name="drift_results")
    window = models.CharField(max_length=10, help_text="The window's length, as in DRIFT_WINDOWS (1h, 1d).")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    predictions = models.PositiveBigIntegerField(default=0, help_text="Recorded predictions in the window.")
    rows = models.PositiveBigIntegerField(default=0, help_text="Samples read (all, or a random sample).")
    sampled = models.BooleanField(default=False)
    level = models.CharField(max_length=10, choices=DriftLevel.choices)
    state = models.CharField(max_length=10, choices=DriftLevel.choices, default=DriftLevel.GREEN)
    features = models.JSONField(default=list)
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ("model", "window")
        constraints = [models.UniqueConstraint(fields=("model", "window"), name="drift_result_unique")]

    def __str__(self) -> str:
        return f"drift of {self.model_id} over {self.window}"
