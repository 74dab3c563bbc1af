"""Fixtures for the webhook tests: a real HTTP receiver on loopback that checks signatures, and
the embedded runner delivering (no broker), with loopback allowed and retries a blink apart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webhooks import signing


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def event(self) -> dict:
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        return self.headers["ModelForge-Event-Type"]


@dataclass
class Receiver:
    """Answers POSTs with the next scripted answer for the path (200 once the script is used
    up) and keeps what came, each request with whether its signature verified."""

    base_url: str
    secret: str = "whsec_test-receiver-secret-0123456789"
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def answer(self, path: str, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.script.setdefault(path, []).extend(answers)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0) -> list[Received]:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.received), timeout):
                raise AssertionError(f"the receiver did not get what was expected; it got {self._summary()}")
            return list(self.received)

    def _summary(self) -> list[tuple[str, str]]:
        return [(item.path, item.headers.get("ModelForge-Event-Type", "")) for item in self.received]


@pytest.fixture
def receiver():
    state = Receiver(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            ok = signing.verify(state.secret, headers.get("ModelForge-Signature", ""), body)
            with state.changed:
                script = state.script.get(self.path) or []
                status, extra, reply = script.pop(0) if script else (200, {}, b"thanks")
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                state.received.append(Received(self.path, headers, body, ok))
                state.changed.notify_all()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _webhooks(settings):
    """Loopback allowed (the receiver), retries 50 ms apart, the embedded runner without its
    sweeper thread; drained and stopped after each test."""
    from core.embedded_runner import runner

    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = ["127.0.0.0/8"]
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.05
    settings.WEBHOOK_RETRY_MAX_SECONDS = 0.2
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0
    settings.CELERY_BROKER_URL = ""
    settings.JOB_SWEEP_INTERVAL_SECONDS = 0
    yield
    runner.wait_idle(timeout=30)
    runner.stop()


def wait_for_delivery(delivery_id, statuses=("delivered", "failed"), timeout: float = 30.0):
    """The delivery once its status is one of ``statuses`` (read from the database)."""
    from webhooks.models import Delivery

    deadline = time.monotonic() + timeout
    while True:
        delivery = Delivery.objects.get(pk=delivery_id)
        if delivery.status in statuses:
            return delivery
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery {delivery_id} is still {delivery.status}")
        time.sleep(0.02)
