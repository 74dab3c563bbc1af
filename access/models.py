"""API keys: hashed at rest, shown once, scoped, with an optional expiry; revocable."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower
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


NAME_HELP = (
    "Who or what uses the key, e.g. billing-svc; 1-50 characters. Unique (letter case aside): the name "
    "stands for the key in logs, the prediction history and the audit trails (key:<name>)."
)


class APIKey(AbstractAPIKey):
    # The library's name "need not be unique"; ours must: `key:<name>` labels a caller in the
    # request log, the history and AliasEvent's actor (text that outlives the key), and two keys
    # behind one label could not be told apart there.
    name = models.CharField(max_length=50, help_text=NAME_HELP)
    scopes = models.JSONField(
        default=list,
        help_text="What the key may do: read (registry reads), predict, manage (registry writes).",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = BaseAPIKeyManager.from_queryset(APIKeyQuerySet)()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.UniqueConstraint(
                Lower("name"),
                name="apikey_name_unique",
                violation_error_message="An API key with this name already exists; choose another name.",
            )
        ]

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
