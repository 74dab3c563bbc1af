"""Every write to webhooks: subscriptions (API and admin), the deliveries of events, and their
attempts (Celery task webhooks.deliver with a broker, the embedded runner's threads without).

Events arrive through core.events (`on_event`, connected in WebhooksConfig.ready) after the
transaction that raised them committed: one Delivery per active subscription that asked for
the type, handed to the background once those rows commit. Delivery is at least once (the
event id lets a receiver ignore a repeat); each attempt claims the delivery with a conditional
UPDATE (pending -> sending), so two copies of one message never both send it.

Retries: a timeout, a connection error or a 5xx is tried again after
WEBHOOK_RETRY_BASE_SECONDS * 2 ** (tries - 1) (at most WEBHOOK_RETRY_MAX_SECONDS), up to
WEBHOOK_MAX_ATTEMPTS tries; any other answer (a 4xx, a redirect) fails the delivery at once.
`deliveries_sweep` hands over again what a down broker or a lost process left behind.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from access.models import APIKey
from core.celery_app import app as celery_app
from core.celery_app import broker_configured
from core.embedded_runner import runner
from webhooks import delivery as http
from webhooks import signing, url_safety
from webhooks.errors import DeliveryInProgress, UrlRefused
from webhooks.models import TEST_EVENT, Attempt, Delivery, Subscription

logger = logging.getLogger(__name__)
Status = Delivery.Status

DELIVER_TASK = "webhooks.deliver"
SWEEP_BATCH = 500


# --- subscriptions ---------------------------------------------------------------------------


def _actor_label(actor) -> str:
    """Who created a subscription, as the registry's audit trail names them."""
    if isinstance(actor, APIKey):
        return f"key:{actor.name}"[:200]
    if actor is not None and getattr(actor, "is_authenticated", False):
        return actor.get_username()[:200]
    return ""


def subscription_create(
    *,
    name: str,
    url: str,
    event_types: list[str],
    secret: str = "",
    active: bool = True,
    actor=None,
) -> Subscription:
    """A new subscription; its URL is checked (400 `webhook_url_refused`). Without a secret, one
    is generated: the caller shows it once (it is never shown again)."""
    url_safety.check(url)
    subscription = Subscription(
        name=name,
        url=url.strip(),
        event_types=list(dict.fromkeys(event_types)),
        secret=secret or signing.new_secret(),
        active=active,
        created_by=_actor_label(actor),
    )
    subscription.full_clean()
    subscription.save()
    logger.info("webhook subscription created", extra={"subscription": str(subscription.pk), "url": subscription.url})
    return subscription


def subscription_update(*, subscription: Subscription, **changes: Any) -> Subscription:
    """Change the name, URL (checked again), event types, active flag or secret."""
    allowed = {"name", "url", "event_types", "active", "secret"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    if "url" in changes:
        changes["url"] = changes["url"].strip()
        url_safety.check(changes["url"])
    if "event_types" in changes:
        changes["event_types"] = list(dict.fromkeys(changes["event_types"]))
    if not changes.get("secret", True):
        changes.pop("secret")
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
        for field, value in changes.items():
            setattr(subscription, field, value)
        subscription.full_clean()
        subscription.save()
    return subscription


def subscription_delete(*, subscription: Subscription) -> None:
    """Delete a subscription with its deliveries; attempts under way find their row gone."""
    subscription.delete()


def subscription_test(*, subscription: Subscription) -> Delivery:
    """Send `webhook.test` to this subscription only (active or not), now."""
    return _deliveries_create(
        subscriptions=[subscription],
        event_type=TEST_EVENT,
        event_id=str(uuid.uuid4()),
        data={"subscription": str(subscription.pk), "name": subscription.name},
    )[0]


# --- events -> deliveries ----------------------------------------------------------------------


def on_event(sender=None, *, type: str, data: dict, id: str, **_: Any) -> list[Delivery]:  # noqa: A002
    """The core.events receiver: a delivery per active subscription listening to ``type``."""
    subscriptions = list(Subscription.objects.listening_to(type))
    if not subscriptions:
        return []
    return _deliveries_create(subscriptions=subscriptions, event_type=type, event_id=id, data=data)


def _body(*, event_type: str, event_id: str, data: dict) -> str:
    return json.dumps(
        {"id": event_id, "type": event_type, "created_at": timezone.now().isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    )


def _deliveries_create(*, subscriptions: list[Subscription], event_type: str, event_id: str, data: dict) -> list:
    body = _body(event_type=event_type, event_id=event_id, data=data)
    now = timezone.now()
    with transaction.atomic():
        deliveries = Delivery.objects.bulk_create(
            [
                Delivery(
                    subscription=subscription,
                    event_id=event_id,
                    event_type=event_type,
                    body=body,
                    next_attempt_at=now,
                )
                for subscription in subscriptions
            ],
            ignore_conflicts=True,  # the same event twice for a subscription: one delivery
        )
        for item in deliveries:
            transaction.on_commit(partial(delivery_enqueue, delivery_id=item.pk), robust=True)
    return deliveries


# --- attempts ----------------------------------------------------------------------------------


def delivery_enqueue(*, delivery_id, countdown: float | None = None) -> bool:
    """Hand a delivery to the broker (task webhooks.deliver) or, without one, to the embedded
    runner, to be attempted after ``countdown`` seconds. A broker that cannot be reached leaves
    it to the sweeper. Returns whether it was handed over."""
    try:
        if broker_configured():
            celery_app.send_task(DELIVER_TASK, args=[str(delivery_id)], countdown=countdown)
        else:
            runner.submit(partial(delivery_attempt, delivery_id=str(delivery_id)), rank=1, delay=countdown)
    except Exception as exc:
        logger.warning(
            "could not queue a webhook delivery (%s); the sweeper retries",
            exc,
            extra={"delivery": str(delivery_id), "error": repr(exc)},
        )
        return False
    return True


def _headers(delivery: Delivery, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "ModelForge-Webhooks/1",
        signing.EVENT_ID_HEADER: str(delivery.event_id),
        signing.EVENT_TYPE_HEADER: delivery.event_type,
        signing.DELIVERY_ID_HEADER: str(delivery.pk),
        signing.TIMESTAMP_HEADER: str(timestamp),
        signing.SIGNATURE_HEADER: signing.signature(delivery.subscription.secret, timestamp, body),
    }


def retry_delay(tries: int) -> float:
    """Seconds before the next try after ``tries`` tries: exponential, capped."""
    return min(settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (tries - 1), settings.WEBHOOK_RETRY_MAX_SECONDS)


def delivery_attempt(*, delivery_id) -> Attempt | None:
    """Claim a pending delivery whose time has come, POST it once, record the attempt and
    decide what follows (delivered, another try later, or failed). None when there was nothing
    to do (delivered, failed, not due yet, deleted, or another attempt holds it)."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, status=Status.PENDING, next_attempt_at__lte=now).update(
        status=Status.SENDING, tries=F("tries") + 1, next_attempt_at=now
    )
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None:
        return None  # its subscription was deleted meanwhile
    body = delivery.body.encode()
    url = delivery.subscription.url
    try:
        target = url_safety.check(url)  # again: the name may resolve elsewhere since it was saved
    except UrlRefused as exc:
        answer = http.Response(None, exc.detail[:500], 0.0, "")
        refused = True
    else:
        answer = http.post(target, body=body, headers=_headers(delivery, body))
        refused = False
    return _record(delivery, url=url, at=now, answer=answer, final=refused or not answer.retryable)


def _record(delivery: Delivery, *, url: str, at: datetime, answer: http.Response, final: bool) -> Attempt | None:
    now = timezone.now()
    if answer.ok:
        outcome, fields = "delivered", {"status": Status.DELIVERED, "delivered_at": now, "next_attempt_at": None}
    elif final or delivery.tries >= settings.WEBHOOK_MAX_ATTEMPTS:
        outcome, fields = "failed", {"status": Status.FAILED, "next_attempt_at": None}
    else:
        delay = retry_delay(delivery.tries)
        outcome, fields = "retry", {"status": Status.PENDING, "next_attempt_at": now + timedelta(seconds=delay)}
    with transaction.atomic():
        # Only the claim that holds it writes the outcome (a sweeper may have taken a stuck one back).
        moved = Delivery.objects.filter(pk=delivery.pk, status=Status.SENDING, tries=delivery.tries).update(
            last_status_code=answer.status_code, last_error=answer.error, **fields
        )
        if not moved:
            return None
        number = (delivery.attempts.aggregate(last=Max("number"))["last"] or 0) + 1
        attempt = Attempt.objects.create(
            delivery=delivery,
            number=number,
            at=at,
            url=url[:2000],
            status_code=answer.status_code,
            error=answer.error[:500],
            duration_ms=answer.duration_ms,
            response_prefix=answer.prefix,
            outcome=outcome,
        )
        if outcome == "retry":
            transaction.on_commit(
                partial(delivery_enqueue, delivery_id=delivery.pk, countdown=retry_delay(delivery.tries)), robust=True
            )
    logger.info(
        "webhook attempt",
        extra={
            "delivery": str(delivery.pk),
            "event": delivery.event_type,
            "status_code": answer.status_code,
            "error": answer.error,
            "outcome": outcome,
        },
    )
    return attempt


def delivery_redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivered or failed delivery again, by hand: a new round of tries, the same body
    and event id (409 `webhook_delivery_in_progress` while it is still pending or sending)."""
    now = timezone.now()
    with transaction.atomic():
        moved = Delivery.objects.filter(pk=delivery.pk, status__in=[Status.DELIVERED, Status.FAILED]).update(
            status=Status.PENDING, tries=0, next_attempt_at=now
        )
        if not moved:
            raise DeliveryInProgress(
                "This delivery is still being attempted; wait until it is delivered or failed, then redeliver."
            )
        transaction.on_commit(partial(delivery_enqueue, delivery_id=delivery.pk), robust=True)
    delivery.refresh_from_db()
    return delivery


# --- maintenance (Celery beat, or the embedded runner's timer) -------------------------------


def deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Hand over again the pending deliveries overdue by more than WEBHOOK_SWEEP_GRACE_SECONDS
    (their message was lost: a broker down, a process ended), take back those left sending by a
    lost attempt (longer than any attempt can take) for another try, and delete finished ones
    older than WEBHOOK_RETENTION_DAYS."""
    now = now or timezone.now()
    grace = timedelta(seconds=settings.WEBHOOK_SWEEP_GRACE_SECONDS)
    stuck_after = timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 3) + grace
    report = {"enqueued": 0, "taken_back": 0}
    report["taken_back"] = Delivery.objects.filter(status=Status.SENDING, next_attempt_at__lt=now - stuck_after).update(
        status=Status.PENDING, next_attempt_at=now
    )
    overdue = Delivery.objects.filter(status=Status.PENDING, next_attempt_at__lt=now - grace)
    for delivery_id in list(overdue.order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH]):
        report["enqueued"] += delivery_enqueue(delivery_id=delivery_id)
    # Finished deliveries past their retention go, with their attempts, a batch per round.
    old = Delivery.objects.filter(
        status__in=[Status.DELIVERED, Status.FAILED],
        created_at__lt=now - timedelta(days=settings.WEBHOOK_RETENTION_DAYS),
    )
    report["deleted"], _ = Delivery.objects.filter(pk__in=list(old.values_list("pk", flat=True)[:SWEEP_BATCH])).delete()
    return report
