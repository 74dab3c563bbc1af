"""Webhooks in the admin: a subscription's secret shown once, URLs refused on the form, the
"send test event" button, deliveries with their attempts and the "redeliver" button."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.embedded_runner import runner
from tests.webhooks.conftest import wait_for_delivery
from webhooks.models import Delivery, Subscription

pytestmark = pytest.mark.django_db

ADD = "/admin/webhooks/subscription/add/"


@pytest.fixture
def admin_client(client, ops_user):
    client.force_login(ops_user)
    return client


def add(admin_client, receiver, **fields):
    data = {"name": "receiver", "url": receiver.url(), "event_types": ["drift.raised", "job.failed"], "active": "on"}
    return admin_client.post(ADD, {**data, **fields})


def test_adding_shows_the_generated_secret_once(admin_client, receiver):
    response = add(admin_client, receiver)
    subscription = Subscription.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:webhooks_subscription_created", args=[subscription.pk])
    page = admin_client.get(response["Location"])
    assert subscription.secret in page.content.decode()
    assert "no-store" in page["Cache-Control"]
    again = admin_client.get(response["Location"]).content.decode()
    assert subscription.secret not in again and "mf-secret-gone" in again
    assert subscription.event_types == ["job.failed", "drift.raised"]  # in EVENT_TYPES' order
    assert subscription.created_by == "ops"


def test_a_given_secret_is_used_and_not_shown(admin_client, receiver):
    response = add(admin_client, receiver, new_secret=receiver.secret)
    assert response.status_code == 302
    assert Subscription.objects.get().secret == receiver.secret
    assert "created" not in response["Location"]


def test_a_private_url_is_refused_on_the_form(admin_client, receiver):
    response = add(admin_client, receiver, url="http://169.254.169.254/latest")
    assert response.status_code == 200
    assert "169.254.169.254 is a link-local address" in response.content.decode()
    assert not Subscription.objects.exists()


def test_editing_keeps_the_secret_unless_given(admin_client, receiver):
    add(admin_client, receiver, new_secret=receiver.secret)
    subscription = Subscription.objects.get()
    change = reverse("admin:webhooks_subscription_change", args=[subscription.pk])
    page = admin_client.get(change).content.decode()
    assert receiver.secret not in page
    response = admin_client.post(change, {"name": "renamed", "url": receiver.url(), "event_types": ["drift.raised"]})
    assert response.status_code == 302
    subscription.refresh_from_db()
    assert (subscription.name, subscription.active, subscription.secret) == ("renamed", False, receiver.secret)


@pytest.mark.django_db(transaction=True)
def test_send_test_event_then_redeliver_from_the_pages(admin_client, receiver):
    add(admin_client, receiver, new_secret=receiver.secret)
    subscription = Subscription.objects.get()
    page = admin_client.get(reverse("admin:webhooks_subscription_change", args=[subscription.pk])).content.decode()
    assert 'id="mf-send-test"' in page
    response = admin_client.post(reverse("admin:webhooks_subscription_send_test", args=[subscription.pk]))
    assert response.status_code == 302
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.event_type == "webhook.test" and got.signature_ok
    delivery = wait_for_delivery(Delivery.objects.get().pk)

    page = admin_client.get(reverse("admin:webhooks_delivery_change", args=[delivery.pk])).content.decode()
    assert "Delivered" in page and "thanks" in page and ">200<" in page
    assert 'id="mf-redeliver"' in page
    response = admin_client.post(reverse("admin:webhooks_delivery_redeliver", args=[delivery.pk]))
    assert response.status_code == 302
    receiver.wait_for(lambda items: len(items) == 2)
    assert wait_for_delivery(delivery.pk).attempts.count() == 2
    runner.wait_idle()

    listing = admin_client.get(reverse("admin:webhooks_delivery_changelist")).content.decode()
    assert "webhook.test" in listing


@pytest.mark.django_db(transaction=True)
def test_the_list_actions(admin_client, receiver):
    add(admin_client, receiver, new_secret=receiver.secret)
    subscription = Subscription.objects.get()
    response = admin_client.post(
        reverse("admin:webhooks_subscription_changelist"),
        {"action": "send_test_event", "_selected_action": [str(subscription.pk)]},
    )
    assert response.status_code == 302
    receiver.wait_for(lambda items: len(items) == 1)
    delivery = wait_for_delivery(Delivery.objects.get().pk)
    response = admin_client.post(
        reverse("admin:webhooks_delivery_changelist"), {"action": "redeliver", "_selected_action": [str(delivery.pk)]}
    )
    assert response.status_code == 302
    receiver.wait_for(lambda items: len(items) == 2)
    wait_for_delivery(delivery.pk)
