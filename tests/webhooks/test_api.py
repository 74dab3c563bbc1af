"""/api/v1/webhooks and /api/v1/webhook-deliveries: manage scope, the secret shown once, test
events and redelivery through the API."""

from __future__ import annotations

import pytest

from tests.webhooks.conftest import wait_for_delivery
from webhooks.models import Subscription

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks"


def subscribe(client, receiver, **fields):
    body = {"name": "receiver", "url": receiver.url(), "event_types": ["drift.raised"], **fields}
    return client.post(WEBHOOKS, body, format="json")


def test_create_shows_a_generated_secret_once(manage_client, receiver):
    response = subscribe(manage_client, receiver)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30
    assert body["created_by"] == "key:ops"
    assert Subscription.objects.get().secret == body["secret"]
    shown = manage_client.get(f"{WEBHOOKS}/{body['id']}").json()
    assert "secret" not in shown
    assert all("secret" not in item for item in manage_client.get(WEBHOOKS).json()["results"])


def test_a_given_secret_is_kept(manage_client, receiver):
    body = subscribe(manage_client, receiver, secret=receiver.secret).json()
    assert body["secret"] == receiver.secret


def test_every_route_needs_the_manage_scope(client_for, receiver):
    reader = client_for("read", "predict")
    assert reader.get(WEBHOOKS).json()["code"] == "missing_scope"
    assert subscribe(reader, receiver).status_code == 403


def test_unknown_event_types_are_refused(manage_client, receiver):
    response = subscribe(manage_client, receiver, event_types=["model.exploded"])
    assert response.status_code == 400
    assert "model.exploded" in response.json()["detail"]


def test_unknown_fields_are_refused(manage_client, receiver):
    response = subscribe(manage_client, receiver, created_by="me")
    assert response.status_code == 400
    assert response.json()["code"] == "read_only_field"


def test_update_checks_the_url_again(manage_client, receiver):
    created = subscribe(manage_client, receiver).json()
    response = manage_client.patch(f"{WEBHOOKS}/{created['id']}", {"url": "http://10.0.0.1/x"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "webhook_url_refused")
    response = manage_client.patch(
        f"{WEBHOOKS}/{created['id']}", {"active": False, "event_types": ["job.failed"]}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["active"], response.json()["event_types"]) == (False, ["job.failed"])


def test_unknown_ids_are_404_with_a_code(manage_client):
    missing = "00000000-0000-4000-8000-000000000000"
    assert manage_client.get(f"{WEBHOOKS}/{missing}").json()["code"] == "webhook_not_found"
    response = manage_client.post(f"/api/v1/webhook-deliveries/{missing}/redeliver")
    assert (response.status_code, response.json()["code"]) == (404, "webhook_delivery_not_found")


def test_delete(manage_client, receiver):
    created = subscribe(manage_client, receiver).json()
    assert manage_client.delete(f"{WEBHOOKS}/{created['id']}").status_code == 204
    assert not Subscription.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_send_test_event_list_deliveries_and_redeliver(manage_client, receiver):
    created = subscribe(manage_client, receiver, secret=receiver.secret).json()
    response = manage_client.post(f"{WEBHOOKS}/{created['id']}/test")
    assert response.status_code == 202
    delivery_id = response.json()["id"]
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.event_type == "webhook.test" and got.signature_ok
    wait_for_delivery(delivery_id)
    listed = manage_client.get(f"{WEBHOOKS}/{created['id']}/deliveries").json()["results"]
    assert [(item["id"], item["status"]) for item in listed] == [(delivery_id, "delivered")]
    assert listed[0]["attempts"][0]["status_code"] == 200
    response = manage_client.post(f"/api/v1/webhook-deliveries/{delivery_id}/redeliver")
    assert (response.status_code, response.json()["status"]) == (202, "pending")
    receiver.wait_for(lambda items: len(items) == 2)
    assert wait_for_delivery(delivery_id).attempts.count() == 2
    detail = manage_client.get(f"/api/v1/webhook-deliveries/{delivery_id}").json()
    assert [attempt["number"] for attempt in detail["attempts"]] == [1, 2]


def test_redeliver_while_pending_is_409(manage_client, receiver):
    from webhooks.models import Delivery

    subscription = Subscription.objects.get(pk=subscribe(manage_client, receiver).json()["id"])
    delivery = Delivery.objects.create(
        subscription=subscription, event_id="6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f", event_type="drift.raised", body="{}"
    )
    response = manage_client.post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver")
    assert (response.status_code, response.json()["code"]) == (409, "webhook_delivery_in_progress")


def test_the_schema_describes_the_routes(manage_client):
    schema = manage_client.get("/api/v1/schema", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/webhooks/{id}/test/" in schema["paths"]
    assert "/api/v1/webhook-deliveries/{id}/redeliver/" in schema["paths"]
