"""The webhooks' domain errors (core.exceptions renders them as {"code", "detail"})."""

from __future__ import annotations

from core.exceptions import Conflict, DomainError, NotFound


class UrlRefused(DomainError):
    """400: a URL webhooks are not sent to (url_safety says why)."""

    code = "webhook_url_refused"


class SubscriptionNotFound(NotFound):
    code = "webhook_not_found"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class DeliveryInProgress(Conflict):
    code = "webhook_delivery_in_progress"
