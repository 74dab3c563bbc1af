"""Fixtures for the /v2 tests: model registration (shared with the inference tests), and a real
server process with a real Triton client for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.http as httpclient
from tritonclient._plugin import InferenceServerClientPlugin

from tests.inference.conftest import _cache_per_worker, ready_model, register  # noqa: F401 (fixtures)
from tests.inference.factories import (
    make_float16_model,
    make_int64_model,
    make_iris_model,
    make_scaled_model,
    make_string_model,
)
from tests.v2 import live_server
from tests.v2.models import backend_cases, make_bool_model, make_two_input_model


def live_models() -> dict:
    """What the live server serves, version 1.0.0 each: {name: model bytes or file}."""
    return {
        "scaled": make_scaled_model(2.0),
        "iris": make_iris_model(zipmap=False),
        "iris-zipmap": make_iris_model(zipmap=True),
        "ints": make_int64_model(),
        "strings": make_string_model(),
        "bools": make_bool_model(),
        "halves": make_float16_model(),
        "two-inputs": make_two_input_model(),
        **{case.name: case.model_path for case in backend_cases()},
    }


@pytest.fixture(scope="session")
def v2_server(tmp_path_factory, worker_id):
    """A granian server on a free port with `live_models()` registered; keys in `.keys`."""
    template, keys = live_template(tmp_path_factory, worker_id)
    server = live_server.start(template, tmp_path_factory.getbasetemp() / "v2-live-server", keys)
    yield server
    live_server.stop(server)


def live_template(tmp_path_factory, worker_id) -> tuple[Path, dict[str, str]]:
    """The live servers' template folder (database, model store) and its keys, built once per
    run for every test that serves the /v2 models (REST, gRPC): pytest-xdist gives each worker
    <run>/popen-gwN, and the run's folder is shared by the workers."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    template = shared / "v2-live-template"
    return template, live_server.build_template(template, live_models(), lock=shared / "v2-live-template.lock")


class BearerKey(InferenceServerClientPlugin):
    """Sends `authorization: Bearer <key>` with every request (tritonclient's plugin hook): an
    HTTP header, or gRPC metadata, whose names are lower-case."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, request):
        request.headers["authorization"] = f"Bearer {self.key}"


@pytest.fixture
def triton_for(v2_server):
    """triton_for("predict") -> a tritonclient.http client sending a key with that scope
    (None: no key)."""
    clients = []

    def _client(scope: str | None = "predict") -> httpclient.InferenceServerClient:
        client = httpclient.InferenceServerClient(v2_server.url)
        if scope is not None:
            client.register_plugin(BearerKey(v2_server.keys[scope]))
        clients.append(client)
        return client

    yield _client
    for client in clients:
        client.close()


@pytest.fixture
def triton(triton_for):
    return triton_for("predict")
