"""Kept connections on the production server (granian, tests/granian_server.py): an answer given
without reading the request body (a wrong method, no key) says `Connection: close`, so a client
that keeps its connection never sends its next request into one granian has closed (before,
one request in two failed that way: bench/keepalive_race.py). Answers whose body was read keep
the connection open."""

from __future__ import annotations

import http.client

import orjson
import pytest

from tests.registry.onnx_factories import make_iris_model
from tests.v2 import live_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keepalive")
    # Two models: the template builder imports from one folder per validating process.
    models = {"iris": make_iris_model(zipmap=False), "spare": make_iris_model(zipmap=False)}
    keys = live_server.build_template(folder / "template", models, lock=folder / "template.lock")
    server = live_server.start(folder / "template", folder / "server", keys)
    try:
        yield server
    finally:
        live_server.stop(server)


def kept_connection_outcomes(server, path: str, body: bytes, headers: dict[str, str]) -> list:
    """ROUNDS POSTs on one http.client connection (it reconnects by itself after a close it was
    told of; a failure is recorded and a new connection made): (status, Connection header)."""
    host, port = server.url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    outcomes = []
    for _ in range(ROUNDS):
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            outcomes.append((response.status, response.getheader("Connection")))
        except (OSError, http.client.HTTPException) as exc:
            outcomes.append(type(exc).__name__)
            connection.close()
    connection.close()
    return outcomes


@pytest.mark.parametrize(
    ("path", "authorized", "status"),
    [
        ("/api/v1/live", True, 405),  # the route takes no POST
        ("/api/v1/models/by-name/iris/predict", False, 401),  # no key
        ("/v2/models/iris/infer", False, 401),
    ],
)
def test_an_answer_that_left_the_body_unread_closes_the_connection_openly(server, path, authorized, status):
    headers = {"Content-Type": "application/json"}
    if authorized:
        headers["Authorization"] = f"Bearer {server.keys['predict']}"
    body = b'{"input_data": {"X": [[' + b"1.0, " * 20_000 + b"1.0]]}}"  # ~100 kB, never read
    outcomes = kept_connection_outcomes(server, path, body, headers)
    assert {outcome if isinstance(outcome, str) else outcome[0] for outcome in outcomes} == {status}, outcomes


def test_answers_that_read_the_body_keep_the_connection(server):
    host, port = server.url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {server.keys['predict']}", "Content-Type": "application/json"}
    body = orjson.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}})
    sockets = set()
    for _ in range(ROUNDS):
        connection.request("POST", "/api/v1/models/by-name/iris/predict", body, headers)
        response = connection.getresponse()
        response.read()
        assert (response.status, response.getheader("Connection")) == (200, None)
        sockets.add(id(connection.sock))
    connection.close()
    assert len(sockets) == 1  # one connection served them all
