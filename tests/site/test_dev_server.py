"""`make run` serves through `manage.py runserver`: Django's development server, built on
wsgiref, which refuses hop-by-hop headers from the application (an AssertionError, answered as
a bare 500) and reads an unread body itself. Requests refused before their body is read (a
wrong key, a missing scope, a body too large) must be the same clear 4xx there as under
granian, and the connection must serve the next request.

The server here is the one runserver runs (django.core.servers.basehttp), in a thread, serving
the application `modelforge_site.wsgi` builds: the fast path in front of the body gate."""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application

from inference.fastpath import PredictFastPath
from modelforge_site.body_gate import BodyGate
from tests.inference.factories import make_scaled_model

pytestmark = pytest.mark.django_db(transaction=True)  # the server's thread must see the rows

BODY = json.dumps({"input_data": {"X": [[1.0, 2.0, 3.0]]}}).encode()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # runserver's access log: not wanted in the test output
        pass


@pytest.fixture
def dev_server(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(PredictFastPath(BodyGate(get_wsgi_application())))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def send(connection: http.client.HTTPConnection, method: str, path: str, *, key: str = "", body: bytes = b""):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    content = response.read()
    return response.status, response.getheader("Content-Type", ""), content


def test_requests_refused_before_their_body_is_read_are_clear_4xx_on_the_development_server(
    dev_server, ready_model, make_key, settings
):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    _, predict_key = make_key("predict", name="predicts")
    _, read_key = make_key("read", name="reads")
    settings.MAX_REQUEST_BODY_BYTES = 4096
    connection = http.client.HTTPConnection("127.0.0.1", dev_server, timeout=30)
    path = f"/api/v1/models/{model['id']}/predict"
    v2 = "/v2/models/scaler/infer"
    v2_body = json.dumps({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()

    refusals = [
        (send(connection, "POST", path, key="not-a-key", body=BODY), 401),
        (send(connection, "POST", path, key=read_key, body=BODY), 403),
        (send(connection, "POST", path, key=predict_key, body=b"[" * 10_000), 413),
        (send(connection, "POST", v2, key="not-a-key", body=v2_body), 401),
        (send(connection, "POST", "/api/v1/models", key="not-a-key", body=BODY), 401),
    ]
    for (status, content_type, content), expected in refusals:
        assert status == expected, content[:300]
        assert content_type.startswith("application/json")
        assert json.loads(content)["code"]
    # The same connection, its unread bodies drained by the server, answers the next request.
    status, _, content = send(connection, "POST", path, key=predict_key, body=BODY)
    assert status == 200, content[:300]
    assert json.loads(content)["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    # The admin's answer to a POST without a staff session: its login page, not a 500.
    status, _, _ = send(connection, "POST", "/admin/registry/mlmodel/add/", body=b"name=x")
    assert status == 302
    connection.close()
