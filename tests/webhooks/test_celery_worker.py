"""With a broker, deliveries and their retries run on a real Celery worker (a subprocess on the
Redis broker, as tests/jobs/test_celery_worker.py runs jobs)."""

from __future__ import annotations

import pytest

from core import events
from tests.jobs.conftest import BROKER_URL, NO_BROKER, CeleryStack, point_celery_at
from tests.webhooks.conftest import wait_for_delivery
from webhooks import services
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hooks_worker(settings, tmp_path):
    if not BROKER_URL:
        pytest.skip(NO_BROKER)
    from django.conf import settings as live_settings

    stack = CeleryStack(tmp_path)
    stack.start_worker(
        "hooks",
        WEBHOOK_ALLOW_PRIVATE_NETWORKS="127.0.0.0/8",
        WEBHOOK_RETRY_BASE_SECONDS="0.1",
        WEBHOOK_RETRY_MAX_SECONDS="0.5",
    )
    stack.configure(settings)
    yield stack
    stack.stop()
    point_celery_at(BROKER_URL, "", live_settings)


def test_a_worker_delivers_and_retries_after_a_500(hooks_worker, receiver):
    receiver.answer("/hook", (500, {}, b"try later"))
    services.subscription_create(
        name="receiver", url=receiver.url(), event_types=["rollout.promoted"], secret=receiver.secret
    )
    events.emit("rollout.promoted", {"name": "iris", "alias": "production", "version": "2.0.0"})
    first, second = receiver.wait_for(lambda items: len(items) == 2, timeout=60)
    assert first.signature_ok and second.signature_ok
    assert first.headers["ModelForge-Event-Id"] == second.headers["ModelForge-Event-Id"]
    delivery = wait_for_delivery(Delivery.objects.get().pk)
    assert delivery.status == "delivered"
    assert list(delivery.attempts.values_list("status_code", "outcome")) == [(500, "retry"), (200, "delivered")]
