"""Request bodies are read only for requests that will be admitted (modelforge_site.body_gate):
a refused request's body is never read, nothing of it reaches the model volume, and the
connection is closed after the refusal; an admitted body that arrives too slowly is cut off
with 408, and when too many bodies are waited on at once the rest get 503 at once.

These run the production WSGI stack in process (the fast path, the gate, Django), with a client
body that records whether anything read it; tests/e2e/test_slow_clients.py does the same against
the real server with real sockets."""

from __future__ import annotations

import io
import logging
import threading

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from pythonjsonlogger.orjson import OrjsonFormatter

from core.request_log import RedactCredentialsFilter
from inference.fastpath import PredictFastPath
from modelforge_site.body_gate import BodyGate
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

BOUNDARY = "gate-boundary"


class ClientBody(io.BytesIO):
    """A request body that remembers whether the server read any of it; with `stall`, reads
    wait for that event first (a client that stopped sending)."""

    def __init__(self, data: bytes, *, stall: threading.Event | None = None):
        super().__init__(data)
        self.touched = False
        self.stall = stall

    def read(self, size=-1):
        self.touched = True
        if self.stall is not None:
            self.stall.wait(60)
        return super().read(size)

    def readline(self, size=-1):
        self.touched = True
        return super().readline(size)


def multipart(size: int) -> bytes:
    """A multipart body with a `file` field of `size` bytes (what an upload sends)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + b"\0" * size + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def app():
    return PredictFastPath(BodyGate(get_wsgi_application()))


def call(app, method: str, path: str, body: ClientBody, *, key: str | None = None, query: str = "", **extra):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "CONTENT_LENGTH": str(len(body.getvalue())),
        "wsgi.input": body,
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **extra,
    }
    if key is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = {name.lower(): value for name, value in headers}

    # As Django's test client: the real handler would close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(app(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return captured["status"], captured["headers"], content


@pytest.fixture
def iris(manage_client):
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    response = manage_client.post("/api/v1/models", {"name": "iris", "version": "1.0.0", "file": upload})
    assert response.json()["status"] == "ready"
    return response.json()


@pytest.fixture
def draft(manage_client):
    """A registered model version without a file: its upload route takes a multipart body."""
    response = manage_client.post("/api/v1/models", {"name": "draft", "version": "1.0.0"}, format="json")
    assert response.status_code == 201
    return response.json()


def assert_refused_unread(result, body: ClientBody, status: int, code: str, model_storage):
    got, headers, content = result
    assert (got, orjson.loads(content).get("code")) == (status, code), content
    assert not body.touched
    assert headers["connection"] == "close"
    assert list((model_storage / "tmp").iterdir()) == []


def test_a_multipart_body_to_a_probe_is_never_read(app, model_storage):
    body = ClientBody(multipart(2 * 1024 * 1024))
    result = call(app, "POST", "/api/v1/live", body)
    assert_refused_unread(result, body, 405, "method_not_allowed", model_storage)


@pytest.mark.parametrize(
    ("credential", "status", "code"),
    [
        (None, 401, "not_authenticated"),
        ("wrong", 401, "invalid_api_key"),
        ("revoked", 401, "api_key_revoked"),
        ("read", 403, "missing_scope"),
    ],
)
def test_an_upload_is_not_read_before_the_key_and_scope_pass(
    app, draft, make_key, model_storage, credential, status, code
):
    key = {
        None: None,
        "wrong": "abcdefgh.0123456789abcdef0123456789abcdef",
        "revoked": make_key("manage", revoked=True)[1],
        "read": make_key("read")[1],
    }[credential]
    body = ClientBody(multipart(2 * 1024 * 1024))
    result = call(app, "POST", f"/api/v1/models/{draft['id']}/upload", body, key=key)
    assert_refused_unread(result, body, status, code, model_storage)


def test_an_admitted_upload_is_read_and_stored(app, draft, make_key):
    model = make_iris_model(zipmap=False)
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = ClientBody(head + model + f"\r\n--{BOUNDARY}--\r\n".encode())
    status, _, content = call(app, "POST", f"/api/v1/models/{draft['id']}/upload", body, key=make_key("manage")[1])
    assert status == 200, content
    assert body.touched
    assert orjson.loads(content)["status"] in {"uploaded", "ready", "validating"}


def test_a_method_the_route_does_not_take_is_refused_unread(app, iris, make_key, model_storage):
    body = ClientBody(multipart(1024))
    result = call(app, "PUT", "/api/v1/models/by-name/iris/versions", body, key=make_key("read", "manage")[1])
    assert_refused_unread(result, body, 405, "method_not_allowed", model_storage)


def test_an_unknown_route_is_refused_unread(app, model_storage):
    body = ClientBody(multipart(1024))
    result = call(app, "POST", "/api/v1/no-such-route", body)
    assert_refused_unread(result, body, 404, "not_found", model_storage)


def test_v2_refusals_are_unread_and_in_the_protocol_shape(app, make_key, model_storage):
    body = ClientBody(b'{"inputs": []}')
    status, headers, content = call(app, "POST", "/v2/models/iris/infer", body, CONTENT_TYPE="application/json")
    assert (status, orjson.loads(content)["code"], set(orjson.loads(content))) == (
        401,
        "not_authenticated",
        {"error", "code"},
    )
    assert not body.touched and headers["connection"] == "close"

    body = ClientBody(b"{}")  # the repository extension needs manage
    status, headers, content = call(
        app, "POST", "/v2/repository/index", body, key=make_key("predict")[1], CONTENT_TYPE="application/json"
    )
    assert (status, orjson.loads(content)["code"]) == (403, "missing_scope")
    assert not body.touched

    body = ClientBody(b"{}")
    status, _, content = call(app, "POST", "/v2/no/such/route", body, CONTENT_TYPE="application/json")
    assert (status, set(orjson.loads(content))) == (404, {"error", "code"})
    assert not body.touched


def test_the_fast_path_reads_no_body_for_a_bad_key(app, iris, model_storage):
    body = ClientBody(b'{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}')
    result = call(
        app,
        "POST",
        "/api/v1/models/by-name/iris/predict",
        body,
        key="abcdefgh.0123456789abcdef0123456789abcdef",
        CONTENT_TYPE="application/json",
    )
    assert_refused_unread(result, body, 401, "invalid_api_key", model_storage)


def test_the_fast_path_still_predicts(app, iris, make_key):
    body = ClientBody(b'{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}')
    status, headers, content = call(
        app,
        "POST",
        "/api/v1/models/by-name/iris/predict",
        body,
        key=make_key("predict")[1],
        CONTENT_TYPE="application/json",
    )
    assert status == 200, content
    assert "connection" not in headers  # the connection stays open for the next request


def test_an_admin_form_without_a_session_goes_to_login_unread(app, model_storage):
    body = ClientBody(multipart(2 * 1024 * 1024))
    status, headers, _ = call(app, "POST", "/admin/registry/mlmodel/add/", body)
    assert status == 302 and headers["location"].startswith("/admin/login/")
    assert not body.touched and headers["connection"] == "close"
    assert list((model_storage / "tmp").iterdir()) == []


def test_a_staff_session_has_its_admin_form_read(app, ops_user):
    client = Client()
    client.force_login(ops_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    body = ClientBody(multipart(1024))
    status, _, _ = call(app, "POST", "/admin/registry/mlmodel/add/", body, HTTP_COOKIE=cookie)
    assert body.touched  # admitted: the admin then answers (a CSRF refusal here, no token sent)
    assert status == 403


def test_an_api_session_is_admitted_and_a_stale_cookie_is_not(app, ops_user, draft, model_storage):
    body = ClientBody(multipart(1024))
    result = call(app, "POST", f"/api/v1/models/{draft['id']}/upload", body, HTTP_COOKIE="sessionid=stale")
    assert_refused_unread(result, body, 401, "not_authenticated", model_storage)

    client = Client()
    client.force_login(ops_user)
    body = ClientBody(multipart(1024))
    call(
        app,
        "POST",
        f"/api/v1/models/{draft['id']}/upload",
        body,
        HTTP_COOKIE=f"sessionid={client.cookies['sessionid'].value}",
    )
    assert body.touched  # the view (DRF's session and CSRF checks, then the permissions) decides


def test_the_admin_login_takes_small_forms_only(app, model_storage):
    body = ClientBody(multipart(2 * 1024 * 1024))
    status, headers, _ = call(app, "POST", "/admin/login/", body)
    assert not body.touched and headers["connection"] == "close"
    assert list((model_storage / "tmp").iterdir()) == []

    token = "a" * 32
    body = ClientBody(f"csrfmiddlewaretoken={token}&username=ops&password=nope".encode())
    status, _, _ = call(
        app,
        "POST",
        "/admin/login/",
        body,
        CONTENT_TYPE="application/x-www-form-urlencoded",
        HTTP_COOKIE=f"csrftoken={token}",
    )
    assert body.touched and status == 200  # the form, read, answered with "wrong password"


def test_a_body_that_stops_arriving_is_cut_off_with_408(app, iris, make_key, settings):
    settings.BODY_READ_TIMEOUT_SECONDS = 0.5
    stall = threading.Event()
    body = ClientBody(b'{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}', stall=stall)
    try:
        status, headers, content = call(
            app,
            "POST",
            "/api/v1/models/by-name/iris/predict",
            body,
            key=make_key("predict")[1],
            CONTENT_TYPE="application/json",
        )
    finally:
        stall.set()  # the client hangs up: the reader thread is free again
    assert (status, orjson.loads(content)["code"]) == (408, "request_timeout")
    assert headers["connection"] == "close"


def test_a_slow_upload_through_django_is_cut_off_with_408(app, draft, make_key, settings, model_storage):
    settings.BODY_READ_TIMEOUT_SECONDS = 0.5
    stall = threading.Event()
    body = ClientBody(multipart(1024), stall=stall)
    try:
        status, headers, content = call(
            app, "POST", f"/api/v1/models/{draft['id']}/upload", body, key=make_key("manage")[1]
        )
    finally:
        stall.set()
    assert (status, orjson.loads(content)["code"]) == (408, "request_timeout")
    assert headers["connection"] == "close"
    assert list((model_storage / "tmp").iterdir()) == []


@pytest.mark.django_db(transaction=True)  # the slow client's thread must see the key and the model
def test_bodies_beyond_the_read_slots_get_503_at_once(app, iris, make_key, settings):
    settings.BODY_READ_SLOTS = 1
    settings.BODY_READ_TIMEOUT_SECONDS = 30
    key = make_key("predict")[1]
    row = b'{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}}'
    stall = threading.Event()
    slow = ClientBody(row, stall=stall)
    results = {}

    def slow_client():
        results["slow"] = call(
            app, "POST", "/api/v1/models/by-name/iris/predict", slow, key=key, CONTENT_TYPE="application/json"
        )

    thread = threading.Thread(target=slow_client)
    thread.start()
    try:
        for _ in range(3000):  # until the slow body holds the only slot (at most 30 s)
            if slow.touched or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert slow.touched, results
        status, headers, content = call(
            app,
            "POST",
            "/api/v1/models/by-name/iris/predict",
            ClientBody(row),
            key=key,
            CONTENT_TYPE="application/json",
        )
        assert (status, orjson.loads(content)["code"]) == (503, "server_busy")
        assert headers["retry-after"] == "1"
    finally:
        stall.set()
        thread.join(60)
    assert results["slow"][0] == 200  # the slow one, once it arrived, was served


def test_a_key_in_the_query_string_is_never_logged(api_client, make_key):
    _, raw = make_key("read")
    # The production handler: JSON lines with every extra field (Django's refusal line carries
    # the request, whose repr is its full path).
    handler = logging.StreamHandler(stream := io.StringIO())
    handler.addFilter(RedactCredentialsFilter())
    handler.setFormatter(OrjsonFormatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        for query in (f"api_key={raw}", f"key={raw}", f"token={raw}", f"x=1&access_token={raw}"):
            response = api_client.get(f"/api/v1/models?{query}")
            assert response.status_code == 401
    finally:
        root.removeHandler(handler)
    logged = stream.getvalue()
    assert "Unauthorized" in logged  # the refusal line is there
    assert raw not in logged and raw.partition(".")[2] not in logged
    assert "[redacted]" in logged
