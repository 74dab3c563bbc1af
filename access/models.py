"""API keys: hashed at rest, shown once, scoped, with an optional expiry; revocable."""

from __future__ import annotations

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager


class Scope(models.TextChoices):
    READ = "read", "Read"
    PREDICT = "predict", "Predict"
    MANAGE = "manage", "Manage"


ALL_SCOPES = tuple(Scope.values)


class APIKeyQuerySet(models.QuerySet):
    def active(self):
        from django.utils import timezone

        return self.filter(revoked=False).exclude(expiry_date__lt=timezone.now())


class APIKey(AbstractAPIKey):
    scopes = models.JSONField(
        default=list,
        help_text="What the key may do: read (registry reads), predict, manage (registry writes).",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = BaseAPIKeyManager.from_queryset(APIKeyQuerySet)()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        # Every process caches verified keys: a revoked or changed key must drop out everywhere.
        from core import invalidation

        invalidation.notify("keys")

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        from core import invalidation

        invalidation.notify("keys")
        return result

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"
