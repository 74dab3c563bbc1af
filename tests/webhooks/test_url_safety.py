"""Where webhooks may go: http(s) only, public addresses only unless allowed, checked at save
and again at every attempt (a name may resolve elsewhere later)."""

from __future__ import annotations

import socket

import pytest

from core import events
from tests.webhooks.conftest import wait_for_delivery
from webhooks import url_safety
from webhooks.errors import UrlRefused
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks"


def create(client, url: str):
    return client.post(WEBHOOKS, {"name": "r", "url": url, "event_types": ["drift.raised"]}, format="json")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://192.168.1.1/hook", "192.168.1.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://0.0.0.0/hook", "0.0.0.0 is the unspecified address"),
        ("http://[::ffff:10.1.2.3]/hook", "::ffff:10.1.2.3 is a private address"),
        ("http://100.64.0.1/hook", "100.64.0.1 is not a globally routable address"),
    ],
)
def test_private_ranges_are_refused_with_the_code(manage_client, url, why):
    response = create(manage_client, url)
    assert response.status_code == 400
    assert response.json()["code"] == "webhook_url_refused"
    assert why in response.json()["detail"]


def test_loopback_is_refused_unless_allowed(manage_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = []
    response = create(manage_client, "http://127.0.0.1:8000/hook")
    assert (response.status_code, response.json()["code"]) == (400, "webhook_url_refused")
    assert "127.0.0.1 is a loopback address" in response.json()["detail"]
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    assert create(manage_client, "http://127.0.0.1:8000/hook").status_code == 201


def test_allowing_true_allows_any_network(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert url_safety.check("http://10.0.0.1/x").addresses == ("10.0.0.1",)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://x/", "javascript:alert(1)"])
def test_other_schemes_are_refused(url):
    with pytest.raises(UrlRefused, match="Only http and https"):
        url_safety.check(url)


def test_non_http_scheme_through_the_api(manage_client):
    response = create(manage_client, "ftp://example.com/hook")
    assert (response.status_code, response.json()["code"]) == (400, "webhook_url_refused")
    assert response.json()["detail"] == "Only http and https URLs can receive webhooks, not 'ftp'."


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch):
    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(UrlRefused, match="'hooks.example.com' resolves to 10.20.30.40, a private address"):
        url_safety.check("https://hooks.example.com/x")


def test_credentials_in_the_url_are_refused():
    with pytest.raises(UrlRefused, match="Credentials"):
        url_safety.check("http://user:pass@127.0.0.1/x")


def test_an_unresolvable_host_is_refused():
    with pytest.raises(UrlRefused, match="does not resolve"):
        url_safety.check("http://no-such-host.invalid/x")


@pytest.mark.django_db(transaction=True)
def test_the_address_is_checked_again_when_sending(receiver, monkeypatch):
    """DNS rebinding: the name resolved to the receiver when subscribed, to a private address
    when the event comes; nothing is sent, the delivery fails saying why."""
    from webhooks import services

    services.subscription_create(name="r", url=receiver.url(), event_types=["drift.raised"])
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: (
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]
            if host == "127.0.0.1"
            else real(host, port, *a, **k)
        ),
    )
    events.emit("drift.raised", {"name": "iris"})
    delivery = wait_for_delivery(Delivery.objects.get().pk)
    assert delivery.status == "failed"
    assert "'127.0.0.1' resolves to 10.0.0.7, a private address" in delivery.attempts.get().error
    assert receiver.received == []
