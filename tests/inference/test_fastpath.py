"""The WSGI fast path answers predict requests exactly as the Django views do."""

from __future__ import annotations

import io

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client

from inference.fastpath import PredictFastPath
from inference.history import history
from inference.models import Prediction
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"
IRIS_ROW = {"X": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def app():
    return PredictFastPath(get_wsgi_application())


def call(app, path, body: bytes, *, key: str | None = None, host: str = "testserver", query: str = "", **extra):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
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
        captured["headers"] = dict(headers)

    # Like Django's test client: the real handler would close the test's database connection
    # at the start and end of each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(app(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return captured["status"], captured["headers"], content


def via_django(path, body: bytes, *, key: str | None, query: str = ""):
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    response = client.post(path + (f"?{query}" if query else ""), body, content_type="application/json", **headers)
    return response.status_code, response


@pytest.fixture
def iris(manage_client):
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    response = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0", "file": upload}, format="multipart")
    assert response.json()["status"] == "ready"
    return response.json()


@pytest.fixture
def predict_key(make_key):
    return make_key("read", "predict", name="caller")[1]


def test_predict_matches_the_django_view(app, iris, predict_key):
    body = orjson.dumps({"input_data": IRIS_ROW, "skip_cache": True})
    status, headers, content = call(app, f"{MODELS}/{iris['id']}/predict", body, key=predict_key)
    django_status, django_response = via_django(f"{MODELS}/{iris['id']}/predict", body, key=predict_key)
    assert status == django_status == 200
    fast, slow = orjson.loads(content), django_response.json()
    assert fast["output_data"] == slow["output_data"]
    assert set(fast) == set(slow)
    assert headers["X-Cache"] == "MISS"
    assert headers["Server-Timing"].startswith("parse;dur=")
    # The headers Django's security middleware adds are there too.
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy"):
        assert headers[name] == django_response[name]


def test_predict_by_name_and_version_and_cache_hit(app, iris, predict_key):
    body = orjson.dumps({"input_data": IRIS_ROW})
    path = f"{MODELS}/by-name/iris/predict"
    first = call(app, path, body, key=predict_key, query="version=1.0.0")
    second = call(app, path, body, key=predict_key)
    assert first[0] == second[0] == 200
    assert first[1]["X-Cache"] == "MISS"
    assert second[1]["X-Cache"] == "HIT"
    assert orjson.loads(second[2])["cached"] is True
    assert orjson.loads(first[2])["output_data"] == orjson.loads(second[2])["output_data"]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong key", 401, "invalid_api_key"),
        ("revoked key", 401, "api_key_revoked"),
        ("read-only key", 403, "missing_scope"),
        ("unknown id", 404, "model_not_found"),
        ("unknown name", 404, "model_not_found"),
        ("unknown version", 404, "model_not_found"),
        ("ragged", 400, "ragged_array"),
        ("nan literal", 400, "non_finite_value"),
        ("not json", 400, "parse_error"),
        ("extra field", 400, "unknown_field"),
        ("archived", 409, "model_archived"),
    ],
)
def test_errors_match_the_django_view(app, iris, make_key, manage_client, case, status, code):
    key = make_key("predict")[1]
    path = f"{MODELS}/{iris['id']}/predict"
    query = ""
    body = orjson.dumps({"input_data": IRIS_ROW})
    if case == "wrong key":
        key = key.partition(".")[0] + ".not-the-secret"
    elif case == "revoked key":
        key = make_key("predict", revoked=True)[1]
    elif case == "read-only key":
        key = make_key("read")[1]
    elif case == "unknown id":
        path = f"{MODELS}/00000000-0000-0000-0000-000000000000/predict"
    elif case == "unknown name":
        path = f"{MODELS}/by-name/nope/predict"
    elif case == "unknown version":
        path, query = f"{MODELS}/by-name/iris/predict", "version=9.9.9"
    elif case == "ragged":
        body = orjson.dumps({"input_data": {"X": [[1, 2, 3, 4], [1]]}})
    elif case == "nan literal":
        body = b'{"input_data": {"X": [[NaN, 1, 2, 3]]}}'
    elif case == "not json":
        body = b"{input_data"
    elif case == "extra field":
        body = orjson.dumps({"input_data": IRIS_ROW, "status": "ready"})
    elif case == "archived":
        manage_client.post(f"{MODELS}/{iris['id']}/archive")

    fast_status, headers, content = call(app, path, body, key=key, query=query)
    django_status, django_response = via_django(path, body, key=key, query=query)
    assert fast_status == django_status == status
    assert orjson.loads(content)["code"] == django_response.json()["code"] == code
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")
    # The server still serves a good request afterwards.
    if case != "archived":
        good = call(
            app, f"{MODELS}/{iris['id']}/predict", orjson.dumps({"input_data": IRIS_ROW}), key=make_key("predict")[1]
        )
        assert good[0] == 200


def test_body_over_the_limit_is_413(app, iris, predict_key, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    body = orjson.dumps({"input_data": {"X": [[1.0, 2.0, 3.0, 4.0]] * 20}})
    status, _, content = call(app, f"{MODELS}/{iris['id']}/predict", body, key=predict_key)
    assert status == 413
    assert orjson.loads(content)["code"] == "body_too_large"


def test_requests_it_cannot_vouch_for_go_to_django(app, iris, predict_key, settings):
    path = f"{MODELS}/{iris['id']}/predict"
    body = orjson.dumps({"input_data": IRIS_ROW})
    # No key: Django answers (401 with its challenge).
    status, headers, content = call(app, path, body)
    assert status == 401
    assert orjson.loads(content)["code"] == "not_authenticated"
    # A host outside ALLOWED_HOSTS: Django's own 400.
    status, _, _ = call(app, path, body, key=predict_key, host="evil.example.com")
    assert status == 400


def test_a_host_is_judged_by_the_allowed_hosts_in_force(app, iris, predict_key, settings):
    path = f"{MODELS}/{iris['id']}/predict"
    body = orjson.dumps({"input_data": IRIS_ROW})
    settings.ALLOWED_HOSTS = ["api.example.com", "testserver"]
    status, _, _ = call(app, path, body, key=predict_key, host="api.example.com")
    assert status == 200
    settings.ALLOWED_HOSTS = ["testserver"]  # the host answered a moment ago is no longer allowed
    status, _, _ = call(app, path, body, key=predict_key, host="api.example.com")
    assert status == 400
    # Many different made-up hosts: every one refused, however many were seen before.
    for index in range(100):
        status, _, _ = call(app, path, body, key=predict_key, host=f"h{index}.evil.example.com")
        assert status == 400
    status, headers, _ = call(app, path, body, key=predict_key)
    assert status == 200
    assert headers["X-Frame-Options"] == settings.X_FRAME_OPTIONS


def test_security_headers_follow_the_settings(app, iris, predict_key, settings):
    path = f"{MODELS}/{iris['id']}/predict"
    body = orjson.dumps({"input_data": IRIS_ROW})
    settings.SECURE_HSTS_SECONDS = 0
    _, headers, _ = call(app, path, body, key=predict_key, **{"wsgi.url_scheme": "https"})
    assert "Strict-Transport-Security" not in headers
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_REFERRER_POLICY = "no-referrer"
    _, headers, _ = call(app, path, body, key=predict_key, **{"wsgi.url_scheme": "https"})
    assert headers["Strict-Transport-Security"].startswith("max-age=3600")
    assert headers["Referrer-Policy"] == "no-referrer"
    _, headers, _ = call(app, path, body, key=predict_key)  # plain HTTP: never HSTS
    assert "Strict-Transport-Security" not in headers


def test_https_redirect_is_left_to_django(iris, predict_key, settings):
    path = f"{MODELS}/{iris['id']}/predict"
    body = orjson.dumps({"input_data": IRIS_ROW})
    settings.SECURE_SSL_REDIRECT = True
    app = PredictFastPath(get_wsgi_application())  # SecurityMiddleware reads the setting at start
    status, headers, _ = call(app, path, body, key=predict_key)
    assert status == 301
    assert headers["Location"].startswith("https://")


def test_a_repeated_body_is_served_from_the_cache_but_never_past_an_archive(app, iris, predict_key, manage_client):
    body = orjson.dumps({"input_data": IRIS_ROW})
    path = f"{MODELS}/{iris['id']}/predict"
    first = call(app, path, body, key=predict_key)
    second = call(app, path, body, key=predict_key)
    assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("MISS", "HIT")
    assert orjson.loads(first[2])["output_data"] == orjson.loads(second[2])["output_data"]
    history.flush()
    # Both requests are in the history with their inputs.
    assert [p.input_data for p in Prediction.objects.filter(model_id=iris["id"])] == [IRIS_ROW, IRIS_ROW]

    manage_client.post(f"{MODELS}/{iris['id']}/archive")
    status, _, content = call(app, path, body, key=predict_key)
    assert status == 409
    assert orjson.loads(content)["code"] == "model_archived"
