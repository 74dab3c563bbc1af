"""Webhooks API (scope manage for every route: a subscription's URL and its deliveries are
configuration): /api/v1/webhooks, /api/v1/webhooks/{id}/test, /api/v1/webhooks/{id}/deliveries,
/api/v1/webhook-deliveries/{id} and its /redeliver."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from access.models import Scope
from core.strict_input import UNAUTHENTICATED, error_responses
from webhooks import services
from webhooks.errors import DeliveryNotFound, SubscriptionNotFound
from webhooks.models import Delivery, Subscription
from webhooks.serializers import (
    DeliverySerializer,
    SubscriptionCreatedSerializer,
    SubscriptionCreateSerializer,
    SubscriptionSerializer,
    SubscriptionUpdateSerializer,
)

_ERRORS = {
    400: (
        "Invalid input; `webhook_url_refused`: the URL is not http(s), or its host does not resolve or resolves "
        "to a loopback, link-local, private or otherwise non-public address (the detail says which)."
    ),
    401: UNAUTHENTICATED,
    403: "`missing_scope`: the key lacks the manage scope; `permission_denied`: the session lacks the permission.",
    404: "No such subscription (`webhook_not_found`) or delivery (`webhook_delivery_not_found`).",
    409: "`webhook_delivery_in_progress`: the delivery is still being attempted.",
}
_MANAGE = dict.fromkeys(
    ("list", "retrieve", "create", "partial_update", "destroy", "send_test", "deliveries", "redeliver"), Scope.MANAGE
)


def _errors(*statuses: int) -> dict:
    return error_responses(_ERRORS, *statuses)


def _actor(request):
    return request.auth if request.auth is not None else request.user


@extend_schema_view(
    list=extend_schema(
        summary="List webhook subscriptions", responses={200: SubscriptionSerializer(many=True), **_errors(401, 403)}
    ),
    retrieve=extend_schema(
        summary="Get a webhook subscription (never its secret)",
        responses={200: SubscriptionSerializer, **_errors(401, 403, 404)},
    ),
    destroy=extend_schema(
        summary="Delete a webhook subscription and its deliveries", responses={204: None, **_errors(401, 403, 404)}
    ),
)
class WebhookViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    queryset = Subscription.objects.all()
    serializer_class = SubscriptionSerializer
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    http_method_names = ("get", "post", "patch", "delete", "head", "options")
    required_scopes = _MANAGE

    def get_object(self):
        try:
            return super().get_object()
        except Http404 as exc:
            raise SubscriptionNotFound(
                "No webhook subscription with this id. List them with GET /api/v1/webhooks."
            ) from exc

    @extend_schema(
        summary="Subscribe a URL to event types (the answer carries the signing secret, once)",
        request=SubscriptionCreateSerializer,
        responses={201: SubscriptionCreatedSerializer, **_errors(400, 401, 403)},
    )
    def create(self, request):
        serializer = SubscriptionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = services.subscription_create(**serializer.validated_data, actor=_actor(request))
        return Response(SubscriptionCreatedSerializer(subscription).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a subscription's name, URL, event types, secret or active flag",
        request=SubscriptionUpdateSerializer,
        responses={200: SubscriptionSerializer, **_errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, pk=None):
        subscription = self.get_object()
        serializer = SubscriptionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        subscription = services.subscription_update(subscription=subscription, **serializer.validated_data)
        return Response(SubscriptionSerializer(subscription).data)

    @extend_schema(
        summary="Send a `webhook.test` event to this subscription (202; see its deliveries for the outcome)",
        request=None,
        responses={202: DeliverySerializer, **_errors(401, 403, 404)},
    )
    @action(detail=True, methods=["post"], url_path="test", url_name="test")
    def send_test(self, request, pk=None):
        delivery = services.subscription_test(subscription=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="This subscription's deliveries, newest first, with their attempts",
        responses={200: DeliverySerializer(many=True), **_errors(401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        subscription = self.get_object()
        rows = Delivery.objects.filter(subscription=subscription).prefetch_related("attempts").order_by("-created_at")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


@extend_schema_view(
    retrieve=extend_schema(
        summary="Get a webhook delivery with its attempts",
        responses={200: DeliverySerializer, **_errors(401, 403, 404)},
    ),
)
class WebhookDeliveryViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Delivery.objects.prefetch_related("attempts")
    serializer_class = DeliverySerializer
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    required_scopes = _MANAGE

    def get_object(self):
        try:
            return super().get_object()
        except Http404 as exc:
            raise DeliveryNotFound(
                "No webhook delivery with this id. List them with GET /api/v1/webhooks/{id}/deliveries."
            ) from exc

    @extend_schema(
        summary="Send a delivered or failed delivery again (same event id and body, a new round of tries)",
        request=None,
        responses={
            202: OpenApiResponse(DeliverySerializer, description="Queued again (status pending)."),
            **_errors(401, 403, 404, 409),
        },
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        delivery = services.delivery_redeliver(delivery=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
