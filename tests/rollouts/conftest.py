"""Fixtures for the rollout tests: a name with versions registered through the API, its
`production` alias, and helpers to drive a rollout and send requests through the exchange."""

from __future__ import annotations

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from access.principals import Credential
from inference import exchange, routing
from inference.protocols import JSON_PREDICT
from inference.shadow import shadow_runner, shadow_stats
from tests.inference.api import MODELS
from tests.inference.factories import make_scaled_model
from tests.redis_databases import redis_database_per_worker  # noqa: F401 (a Redis database per test worker)

NAME = "scaler"
ROW = {"X": [[1.0, 2.0, 3.0]]}
BODY = orjson.dumps({"input_data": ROW})


def rollout_url(name: str = NAME, alias: str = "production") -> str:
    return f"{MODELS}/by-name/{name}/aliases/{alias}/rollout"


@pytest.fixture(autouse=True)
def _routing_state(settings):
    routing.rng.seed(1234)
    # A shadow copy waits for the process to be idle (inference.shadow): the test client's
    # requests come back to back, so copies wait for the test's pause (a join) whatever the load.
    settings.SHADOW_MAX_WAIT_SECONDS = 600
    shadow_stats.discard()
    yield
    shadow_runner.join()
    shadow_stats.discard()


@pytest.fixture
def upload(manage_client):
    """upload(data, version, name=NAME) -> the model as the API returns it, ready."""

    def _upload(data: bytes, version: str, name: str = NAME) -> dict:
        file = SimpleUploadedFile("m.onnx", data)
        response = manage_client.post(MODELS, {"name": name, "version": version, "file": file}, format="multipart")
        assert response.json()["status"] == "ready", response.json()
        return response.json()

    return _upload


@pytest.fixture
def versions(upload, manage_client):
    """scaler 1.0.0 (Y = X), 1.1.0 (Y = 2X), 1.2.0 (the file of 1.0.0 again); production -> 1.0.0."""
    made = {
        "1.0.0": upload(make_scaled_model(1.0), "1.0.0"),
        "1.1.0": upload(make_scaled_model(2.0), "1.1.0"),
        "1.2.0": upload(make_scaled_model(1.0), "1.2.0"),
    }
    response = manage_client.put(f"{MODELS}/by-name/{NAME}/aliases/production", {"version": "1.0.0"}, format="json")
    assert response.status_code == 201, response.json()
    return made


@pytest.fixture
def start(manage_client):
    """start(**body) -> the rollout report after PUT .../rollout (asserting 200)."""

    def _start(name: str = NAME, alias: str = "production", **body) -> dict:
        response = manage_client.put(rollout_url(name, alias), body, format="json")
        assert response.status_code == 200, response.json()
        return response.json()

    return _start


@pytest.fixture
def send(make_key):
    """send(routing_key=None, body=BODY, key=None) -> (status, X-Model-Version, JSON body):
    one /api/v1 predict by name through the serving exchange, as every door calls it."""
    _api_key, raw = make_key("predict", name="sender")

    def _send(routing_key: str | None = None, *, body: bytes = BODY, key: str | None = None, ref=None):
        headers = {routing.ROUTING_METADATA: routing_key} if routing_key else {}
        reply = exchange.answer(
            Credential.from_header(f"Bearer {key or raw}"),
            ref or exchange.ModelRef(name=NAME),
            exchange.Incoming(len(body), lambda: body, headers),
            JSON_PREDICT,
        )
        return reply.status, reply.headers.get(routing.VERSION_HEADER), orjson.loads(reply.content)

    return _send


@pytest.fixture
def http_send(make_key):
    """http_send(routing_key) -> the response of POST /api/v1/models/by-name/scaler/predict
    through Django (counted in the serving statistics, as a server counts it)."""
    from django.test import Client

    _api_key, raw = make_key("predict", name="http-sender")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def _send(routing_key: str, *, body: bytes = BODY):
        return client.post(
            f"{MODELS}/by-name/{NAME}/predict", body, content_type="application/json", HTTP_X_ROUTING_KEY=routing_key
        )

    return _send
