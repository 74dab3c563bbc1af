"""Webhooks API: what a subscription, a delivery and an attempt look like, and what may be sent."""

from __future__ import annotations

from rest_framework import serializers

from core.events import EVENT_TYPES
from core.strict_input import StrictInputSerializer
from webhooks.models import Attempt, Delivery, Subscription

EVENT_TYPE_HELP = "Event types to receive: " + ", ".join(f"`{name}`" for name in EVENT_TYPES) + "."


class EventTypesField(serializers.ListField):
    child = serializers.ChoiceField(choices=list(EVENT_TYPES))

    def __init__(self, **kwargs):
        super().__init__(allow_empty=False, help_text=EVENT_TYPE_HELP, **kwargs)


class SubscriptionCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    url = serializers.CharField(max_length=2000, help_text="http(s) URL on a public address.")
    event_types = EventTypesField()
    secret = serializers.CharField(
        min_length=24,
        max_length=200,
        required=False,
        help_text="Signing secret (at least 24 characters). Omit it to have one generated; it is shown once.",
    )
    active = serializers.BooleanField(default=True)


class SubscriptionUpdateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100, required=False)
    url = serializers.CharField(max_length=2000, required=False)
    event_types = EventTypesField(required=False)
    secret = serializers.CharField(
        min_length=24, max_length=200, required=False, help_text="A new signing secret (it is not shown back)."
    )
    active = serializers.BooleanField(required=False)


class SubscriptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Subscription
        fields = ("id", "name", "url", "event_types", "active", "created_by", "created_at", "updated_at")
        read_only_fields = fields


class SubscriptionCreatedSerializer(SubscriptionSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret: shown in this answer only, never again."
    )

    class Meta(SubscriptionSerializer.Meta):
        fields = (*SubscriptionSerializer.Meta.fields, "secret")
        read_only_fields = fields


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ("number", "at", "status_code", "error", "duration_ms", "response_prefix", "outcome")
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    subscription_id = serializers.UUIDField(read_only=True)
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = (
            "id",
            "subscription_id",
            "event_id",
            "event_type",
            "status",
            "tries",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
            "attempts",
        )
        read_only_fields = fields
