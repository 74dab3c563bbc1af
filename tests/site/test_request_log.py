"""Request ids on every response and the one log line per request, through Django and through
the WSGI fast path; JSON lines in production, plain text in development."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.wsgi import get_wsgi_application
from django.utils.module_loading import import_string

from core.request_log import RequestIdFilter
from inference.fastpath import PredictFastPath
from tests.inference.test_fastpath import call
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

GENERATED = re.compile(r"[0-9a-f]{32}")
ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def json_lines():
    """The lines the production formatter (settings.LOGGING's "json") writes, as dicts.

    Ask for it after `fast_app`: building a WSGI application sets up logging again."""
    config = dict(settings.LOGGING["formatters"]["json"])
    formatter = import_string(config.pop("()"))(**config)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield lambda: [orjson.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def iris(manage_client):
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    response = manage_client.post("/api/v1/models", {"name": "iris", "version": "1.0.0", "file": upload})
    assert response.json()["status"] == "ready", response.json()
    return response.json()


@pytest.fixture
def fast_app():
    return PredictFastPath(get_wsgi_application())


def test_every_django_response_has_a_new_request_id(client, api_client):
    first = client.get("/api/v1/live")
    second = api_client.get("/api/v1/models")  # a 401
    missing = client.get("/no/such/page")
    ids = [response["X-Request-ID"] for response in (first, second, missing)]
    assert all(GENERATED.fullmatch(value) for value in ids)
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    ("incoming", "echoed"),
    [
        ("3f2c1a9e-7d4b-4c1e-9a55-0b1d2c3e4f50", True),
        ("trace.abc:42/x+y=z_-", True),
        ("a" * 128, True),
        ("a" * 129, False),  # too long
        ("two words", False),
        ("<script>", False),
        ("naïve", False),
        ("", False),
    ],
)
def test_a_sane_incoming_request_id_is_kept_and_others_replaced(client, fast_app, iris, make_key, incoming, echoed):
    response = client.get("/api/v1/live", HTTP_X_REQUEST_ID=incoming)
    key = make_key("predict")[1]
    body = orjson.dumps({"input_data": {"X": ROW}})
    status, headers, _ = call(
        fast_app, f"/api/v1/models/{iris['id']}/predict", body, key=key, HTTP_X_REQUEST_ID=incoming
    )
    assert status == 200
    for answered in (response["X-Request-ID"], headers["X-Request-ID"]):
        if echoed:
            assert answered == incoming
        else:
            assert GENERATED.fullmatch(answered)


def test_fast_path_errors_and_v2_infer_carry_an_id_too(fast_app, iris, make_key):
    key = make_key("predict")[1]
    status, headers, _ = call(fast_app, f"/api/v1/models/{iris['id']}/predict", b"{", key=key)
    assert status == 400
    assert GENERATED.fullmatch(headers["X-Request-ID"])
    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW[0]}]})
    status, headers, _ = call(fast_app, "/v2/models/iris/infer", body, key=key, HTTP_X_REQUEST_ID="v2-call")
    assert status == 200
    assert headers["X-Request-ID"] == "v2-call"


def test_one_json_line_per_predict_with_key_model_and_durations(fast_app, iris, make_key, client, json_lines):
    key = make_key("predict", name="billing-service")[1]
    body = orjson.dumps({"input_data": {"X": ROW}, "skip_cache": True})
    status, _, _ = call(fast_app, f"/api/v1/models/{iris['id']}/predict", body, key=key, HTTP_X_REQUEST_ID="req-1")
    assert status == 200
    response = client.post(
        "/api/v1/models/by-name/iris/predict",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        HTTP_X_REQUEST_ID="req-2",
    )
    assert response.status_code == 200

    lines = [line for line in json_lines() if line["name"] == "modelforge.request"]
    assert [line["request_id"] for line in lines] == ["req-1", "req-2"]
    for line in lines:
        assert line["levelname"] == "INFO"
        assert line["timestamp"]
        assert line["method"] == "POST"
        assert line["status"] == 200
        assert line["key"] == "billing-service"
        assert (line["model"], line["version"]) == ("iris", "1.0.0")
        assert line["cached"] is None  # skip_cache: no lookup
        assert line["duration_ms"] > 0
        assert line["compute_ms"] > 0
        assert line["queue_ms"] == 0  # batching is off
        assert line["duration_ms"] >= line["compute_ms"]
    assert lines[0]["path"] == f"/api/v1/models/{iris['id']}/predict"
    assert "/predict" in lines[0]["message"] and "200" in lines[0]["message"]


def test_every_line_logged_while_handling_a_request_carries_its_id(json_lines, client, read_client):
    # Django logs its own "Not Found" warning for a 404: that line belongs to the request too.
    response = read_client.get("/api/v1/models/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    lines = json_lines()
    django_line = next(line for line in lines if line["name"] == "django.request")
    assert django_line["request_id"] == request_id
    request_line = next(line for line in lines if line["name"] == "modelforge.request")
    assert request_line["request_id"] == request_id
    assert request_line["status"] == 404
    assert request_line["key"] == "reader"
    assert request_line["model"] is None  # not a predict request
    logging.getLogger("elsewhere").warning("outside a request")
    assert json_lines()[-1]["request_id"] in {request_id, "-"}


def test_plain_text_in_development_json_in_production(tmp_path):
    """The real logging configuration, in a process of its own: DEBUG off means JSON lines."""
    code = (
        "import django; django.setup(); from django.test import Client; "
        "Client().get('/api/v1/live', HTTP_X_REQUEST_ID='from-test', HTTP_HOST='127.0.0.1')"
    )
    base = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
    }
    production = {
        **base,
        "DEBUG": "false",
        "SECRET_KEY": "log-test-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
    }
    production.pop("LOG_FORMAT", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(settings.BASE_DIR), env=production, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (request_line,) = [line for line in lines if line["name"] == "modelforge.request"]
    assert request_line["request_id"] == "from-test"
    assert request_line["status"] == 200
    assert request_line["path"] == "/api/v1/live"

    development = {**base, "DEBUG": "true", "LOG_FORMAT": "plain"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(settings.BASE_DIR), env=development, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"INFO modelforge\.request \[from-test\] GET /api/v1/live 200 [0-9.]+ms", done.stderr)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be plain or json"),
        ("SERVING_STATS_RETENTION_DAYS", "0", "SERVING_STATS_RETENTION_DAYS must be a positive number"),
    ],
)
def test_a_bad_setting_fails_at_start(name, value, message):
    env = {**os.environ, name: value, "DJANGO_SETTINGS_MODULE": "modelforge_site.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert message in done.stderr
