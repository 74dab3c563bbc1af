"""Webhook subscriptions, the deliveries of events to them, and every attempt of a delivery.

A delivery is one event for one subscription; its body (the signed JSON) is fixed when it is
created, so every attempt and every redelivery sends the same bytes (with a fresh signature
timestamp). Its status moves by conditional UPDATEs in webhooks.delivery:
pending (waiting for its first or next attempt) -> sending (an attempt holds it) -> delivered,
back to pending (a retry after a timeout, a connection error or a 5xx), or failed (any other
answer, or no attempts left). A failed or delivered one goes back to pending by hand (redeliver).
"""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.db import models

from core.events import EVENT_TYPES

# The event type of "send test event": only ever sent to the one subscription asked.
TEST_EVENT = "webhook.test"

# At most this much of a receiver's answer is kept on an attempt (characters).
RESPONSE_PREFIX_CHARS = 1024


def validate_event_types(value) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give a non-empty list of event types.", code="invalid_event_types")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.",
            code="invalid_event_types",
        )


class SubscriptionQuerySet(models.QuerySet):
    def listening_to(self, event_type: str):
        """The active subscriptions that asked for ``event_type``."""
        return self.filter(active=True, event_types__contains=[event_type])


class Subscription(models.Model):
    """A URL that hears about the event types it lists, signed with its secret.

    The secret signs every delivery (HMAC-SHA256), so the server must keep it readable; it is
    shown once, when the subscription is created, and never again by the API or the admin."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, help_text="What this receiver is, for people.")
    url = models.URLField(
        max_length=2000, help_text="http(s) URL that receives the events (POST, JSON); redirects are not followed."
    )
    secret = models.CharField(max_length=200, editable=False)
    event_types = models.JSONField(
        default=list, validators=[validate_event_types], help_text="The event types sent to this URL."
    )
    active = models.BooleanField(default=True, help_text="Inactive subscriptions are sent nothing.")
    created_by = models.CharField(max_length=200, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ("name", "created_at")
        verbose_name = "webhook subscription"

    def __str__(self) -> str:
        return self.name


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(help_text="The event's id: the same in every delivery and attempt of one event.")
    event_type = models.CharField(max_length=50)
    body = models.TextField(help_text="The JSON sent, byte for byte (what the signature covers).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    tries = models.PositiveIntegerField(default=0, help_text="Attempts in this round (a redelivery starts a new one).")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=("subscription", "-created_at"), name="delivery_subscription_recent"),
            models.Index(fields=("status", "next_attempt_at"), name="delivery_status_next"),
        ]
        constraints = [
            models.UniqueConstraint(fields=("subscription", "event_id"), name="delivery_one_per_event"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.subscription.name}"


class Attempt(models.Model):
    """One POST of a delivery: what came back (status code, or the error), how long it took,
    and at most RESPONSE_PREFIX_CHARS of the answer."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    url = models.CharField(max_length=2000)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.FloatField()
    response_prefix = models.TextField(blank=True, default="")
    outcome = models.CharField(max_length=10, help_text="delivered, retry or failed")

    class Meta:
        ordering = ("delivery", "number")
        constraints = [models.UniqueConstraint(fields=("delivery", "number"), name="attempt_number_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number}"
