"""Delivering events to a real receiver on loopback: signed, retried on 5xx and timeouts,
never on 4xx or redirects, every attempt recorded."""

from __future__ import annotations

import json

import pytest

from core import events
from tests.webhooks.conftest import wait_for_delivery
from webhooks import services
from webhooks.models import Attempt, Delivery

pytestmark = pytest.mark.django_db(transaction=True)


def subscribe(receiver, *types: str, path: str = "/hook"):
    return services.subscription_create(
        name="receiver", url=receiver.url(path), event_types=list(types), secret=receiver.secret
    )


def test_an_event_arrives_signed_with_its_id_and_type(receiver):
    subscribe(receiver, "drift.raised")
    events.emit("drift.raised", {"name": "iris", "version": "1.0.0"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.signature_ok
    body = got.event
    assert body["type"] == "drift.raised" == got.headers["ModelForge-Event-Type"]
    assert body["id"] == got.headers["ModelForge-Event-Id"]
    assert body["data"] == {"name": "iris", "version": "1.0.0"}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["ModelForge-Signature"].startswith(f"t={got.headers['ModelForge-Timestamp']},v1=")
    delivery = wait_for_delivery(got.headers["ModelForge-Delivery-Id"])
    assert delivery.status == "delivered"
    (attempt,) = delivery.attempts.all()
    assert (attempt.number, attempt.status_code, attempt.outcome, attempt.response_prefix) == (
        1,
        200,
        "delivered",
        "thanks",
    )


def test_a_wrong_secret_does_not_verify(receiver):
    services.subscription_create(
        name="other", url=receiver.url(), event_types=["drift.cleared"], secret="whsec_not-the-receivers-secret"
    )
    events.emit("drift.cleared", {"name": "iris"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert not got.signature_ok


def test_only_listening_active_subscriptions_get_an_event(receiver):
    subscribe(receiver, "drift.raised", path="/listening")
    subscribe(receiver, "drift.cleared", path="/other-type")
    services.subscription_update(subscription=subscribe(receiver, "drift.raised", path="/off"), active=False)
    events.emit("drift.raised", {"name": "iris"})
    receiver.wait_for(lambda items: len(items) >= 1)
    assert Delivery.objects.count() == 1
    assert [item.path for item in receiver.received] == ["/listening"]


def test_a_500_is_retried_and_the_retry_delivers(receiver):
    receiver.answer("/hook", (500, {}, b"boom"))
    subscribe(receiver, "job.failed")
    events.emit("job.failed", {"job_id": "j"})
    first, second = receiver.wait_for(lambda items: len(items) == 2)
    assert first.signature_ok and second.signature_ok
    assert first.headers["ModelForge-Event-Id"] == second.headers["ModelForge-Event-Id"]
    assert first.body == second.body
    delivery = wait_for_delivery(second.headers["ModelForge-Delivery-Id"])
    assert delivery.status == "delivered"
    attempts = list(delivery.attempts.values_list("number", "status_code", "outcome", "response_prefix"))
    assert attempts == [(1, 500, "retry", "boom"), (2, 200, "delivered", "thanks")]


def test_a_4xx_is_not_retried(receiver):
    receiver.answer("/hook", (410, {}, b"gone"))
    subscribe(receiver, "job.completed")
    events.emit("job.completed", {"job_id": "j"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    delivery = wait_for_delivery(got.headers["ModelForge-Delivery-Id"])
    assert (delivery.status, delivery.last_status_code, delivery.tries) == ("failed", 410, 1)
    assert delivery.attempts.get().outcome == "failed"


def test_redirects_are_not_followed(receiver):
    receiver.answer("/hook", (302, {"Location": receiver.url("/elsewhere")}, b""))
    subscribe(receiver, "job.completed")
    events.emit("job.completed", {"job_id": "j"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    delivery = wait_for_delivery(got.headers["ModelForge-Delivery-Id"])
    assert (delivery.status, delivery.last_status_code) == ("failed", 302)
    assert [item.path for item in receiver.received] == ["/hook"]


def test_gives_up_after_the_last_attempt(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    receiver.answer("/hook", *[(503, {}, b"busy")] * 5)
    subscribe(receiver, "drift.raised")
    events.emit("drift.raised", {"name": "iris"})
    receiver.wait_for(lambda items: len(items) == 3)
    delivery = wait_for_delivery(Delivery.objects.get().pk)
    assert (delivery.status, delivery.tries, delivery.last_status_code) == ("failed", 3, 503)
    assert list(delivery.attempts.values_list("outcome", flat=True)) == ["retry", "retry", "failed"]


def test_a_receiver_that_is_down_is_retried(receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    services.subscription_create(name="down", url="http://127.0.0.1:9/hook", event_types=["drift.raised"])
    events.emit("drift.raised", {"name": "iris"})
    delivery = wait_for_delivery(Delivery.objects.get().pk)
    assert (delivery.status, delivery.tries) == ("failed", 2)
    first, second = delivery.attempts.all()
    assert first.status_code is None and first.outcome == "retry"
    assert first.error.startswith("connection failed")


def test_only_a_prefix_of_the_answer_is_kept(receiver):
    receiver.answer("/hook", (200, {}, b"x" * 100_000))
    subscribe(receiver, "drift.raised")
    events.emit("drift.raised", {"name": "iris"})
    delivery = wait_for_delivery(receiver.wait_for(lambda items: len(items) == 1)[0].headers["ModelForge-Delivery-Id"])
    assert delivery.attempts.get().response_prefix == "x" * 1024


def test_redeliver_sends_the_same_event_again(receiver):
    subscribe(receiver, "drift.raised")
    events.emit("drift.raised", {"name": "iris"})
    (first,) = receiver.wait_for(lambda items: len(items) == 1)
    delivery = wait_for_delivery(first.headers["ModelForge-Delivery-Id"])
    services.delivery_redeliver(delivery=delivery)
    _, again = receiver.wait_for(lambda items: len(items) == 2)
    assert again.body == first.body and again.signature_ok
    delivery = wait_for_delivery(delivery.pk)
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2]


def test_test_event_goes_to_that_subscription_only(receiver):
    subscription = subscribe(receiver, "drift.raised", path="/asked")
    subscribe(receiver, "drift.raised", path="/not-asked")
    delivery = services.subscription_test(subscription=subscription)
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.path == "/asked" and got.event_type == "webhook.test" and got.signature_ok
    assert json.loads(got.body)["data"]["subscription"] == str(subscription.pk)
    assert wait_for_delivery(delivery.pk).status == "delivered"


def test_a_lost_delivery_is_sent_by_the_sweeper(receiver, settings):
    from datetime import timedelta

    from django.utils import timezone

    subscription = subscribe(receiver, "drift.raised")
    delivery = Delivery.objects.create(
        subscription=subscription,
        event_id="6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
        event_type="drift.raised",
        body='{"lost":true}',
        next_attempt_at=timezone.now() - timedelta(seconds=settings.WEBHOOK_SWEEP_GRACE_SECONDS + 1),
    )
    assert services.deliveries_sweep() == {"enqueued": 1, "taken_back": 0, "deleted": 0}
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.body == b'{"lost":true}'
    assert wait_for_delivery(delivery.pk).status == "delivered"
    assert Attempt.objects.count() == 1


def test_a_receiver_that_does_not_answer_times_out_and_is_retried(settings):
    import socket

    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever answers
    try:
        port = silent.getsockname()[1]
        services.subscription_create(name="silent", url=f"http://127.0.0.1:{port}/", event_types=["drift.raised"])
        events.emit("drift.raised", {"name": "iris"})
        delivery = wait_for_delivery(Delivery.objects.get().pk)
    finally:
        silent.close()
    assert (delivery.status, delivery.tries) == ("failed", 2)
    assert [attempt.error.split(":")[0] for attempt in delivery.attempts.all()] == ["timed out", "timed out"]
    assert [attempt.outcome for attempt in delivery.attempts.all()] == ["retry", "failed"]


def test_the_sweeper_deletes_finished_deliveries_past_retention(receiver, settings):
    from datetime import timedelta

    from django.utils import timezone

    subscription = subscribe(receiver, "drift.raised")
    old = timezone.now() - timedelta(days=settings.WEBHOOK_RETENTION_DAYS + 1)
    for status, event_id in (("delivered", "1" * 32), ("failed", "2" * 32), ("pending", "3" * 32)):
        delivery = Delivery.objects.create(
            subscription=subscription, event_id=event_id, event_type="drift.raised", body="{}", status=status
        )
        Delivery.objects.filter(pk=delivery.pk).update(created_at=old, next_attempt_at=timezone.now())
    report = services.deliveries_sweep()
    assert report["deleted"] == 2
    assert list(Delivery.objects.values_list("status", flat=True)) == ["pending"]


def test_a_delivery_left_sending_is_taken_back_and_sent(receiver, settings):
    from datetime import timedelta

    from django.utils import timezone

    subscription = subscribe(receiver, "drift.raised")
    lost = timezone.now() - timedelta(
        seconds=settings.WEBHOOK_TIMEOUT_SECONDS * 3 + settings.WEBHOOK_SWEEP_GRACE_SECONDS + 1
    )
    delivery = Delivery.objects.create(
        subscription=subscription,
        event_id="4" * 32,
        event_type="drift.raised",
        body='{"taken":"back"}',
        status="sending",
        tries=1,
        next_attempt_at=lost,
    )
    assert services.deliveries_sweep()["taken_back"] == 1
    assert Delivery.objects.get(pk=delivery.pk).status == "pending"
    # Due now; a later sweep (past its grace) hands it over: here, at once.
    services.delivery_enqueue(delivery_id=delivery.pk)
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.body == b'{"taken":"back"}'
    assert wait_for_delivery(delivery.pk).status == "delivered"


def test_a_named_host_is_sent_its_name_in_the_host_header(receiver):
    port = receiver.base_url.rsplit(":", 1)[1]
    services.subscription_create(
        name="named", url=f"http://localhost:{port}/named?x=1", event_types=["drift.raised"], secret=receiver.secret
    )
    events.emit("drift.raised", {"name": "iris"})
    (got,) = receiver.wait_for(lambda items: len(items) == 1)
    assert got.path == "/named?x=1"
    assert got.headers["Host"] == f"localhost:{port}"
    assert got.signature_ok


def test_https_to_an_untrusted_certificate_is_refused(tmp_path, settings):
    """The TLS path verifies the certificate against the URL's name (not the pinned address):
    a self-signed certificate fails the attempt and nothing is sent."""
    import datetime
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    posted = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posted.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    try:
        port = server.server_address[1]
        services.subscription_create(name="tls", url=f"https://localhost:{port}/", event_types=["drift.raised"])
        events.emit("drift.raised", {"name": "iris"})
        delivery = wait_for_delivery(Delivery.objects.get().pk)
    finally:
        server.shutdown()
        server.server_close()
    assert delivery.status == "failed"
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.attempts.get().error
    assert posted == []
