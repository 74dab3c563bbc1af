"""Throttles per API key (THROTTLE_RATES, access/throttling.py): the request past the rate is
429 `throttled` with Retry-After, on predict through Django and through the WSGI fast path
(one budget for both), on /v2 infer, on uploads; keys have separate budgets, and the count
lives in Redis, shared with other processes. Job creation: tests/jobs/test_jobs_throttle.py."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.wsgi import get_wsgi_application

from access.throttling import parse_rate
from inference.fastpath import PredictFastPath
from tests.inference.api import MODELS, predict_url
from tests.inference.test_fastpath import call
from tests.redis_databases import redis_database_per_worker  # noqa: F401 (a Redis database per test worker)
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

BODY = orjson.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}})
V2_BODY = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})


@pytest.fixture
def rates(settings):
    def _set(**scopes: str) -> None:
        settings.THROTTLE_RATES = {"predict": "", "upload": "", "jobs": "", **scopes}

    return _set


@pytest.fixture
def iris(manage_client):
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    response = manage_client.post(MODELS, {"name": "iris", "version": "1.0.0", "file": upload}, format="multipart")
    assert response.json()["status"] == "ready", response.json()
    return response.json()


@pytest.fixture
def app():
    return PredictFastPath(get_wsgi_application())


def assert_throttled(status: int, headers, body: dict, *, message_key: str = "detail") -> None:
    assert status == 429, body
    assert body["code"] == "throttled"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "Retry in" in body[message_key]


def django_predict(client, model_id):
    return client.generic("POST", predict_url(model_id), BODY, content_type="application/json")


def test_predict_past_the_rate_is_429_through_django(iris, client_for, rates):
    rates(predict="3/min")
    client = client_for("predict")
    for _ in range(3):
        assert django_predict(client, iris["id"]).status_code == 200
    response = django_predict(client, iris["id"])
    assert_throttled(response.status_code, response, response.json())


def test_predict_past_the_rate_is_429_on_the_fast_path(app, iris, make_key, rates):
    rates(predict="3/min")
    _, key = make_key("predict")
    for _ in range(3):
        assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 200
    status, headers, content = call(app, predict_url(iris["id"]), BODY, key=key)
    assert_throttled(status, headers, orjson.loads(content))


def test_fast_path_and_django_share_one_budget(app, iris, make_key, client_for, rates):
    rates(predict="3/min")
    _, key = make_key("predict")
    assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 200
    assert call(app, f"{MODELS}/by-name/iris/predict", BODY, key=key)[0] == 200
    client = client_for("predict")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert django_predict(client, iris["id"]).status_code == 200
    response = django_predict(client, iris["id"])
    assert response.status_code == 429
    assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 429


def test_v2_infer_past_the_rate_is_429_with_the_protocol_error_body(app, iris, make_key, client_for, rates):
    rates(predict="2/min")
    _, key = make_key("predict")
    client = client_for("predict")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    infer = "/v2/models/iris/infer"
    assert client.post(infer, V2_BODY, content_type="application/json").status_code == 200
    assert call(app, infer, V2_BODY, key=key)[0] == 200  # the fast path answers /v2 too
    response = client.post(infer, V2_BODY, content_type="application/json")
    assert response.status_code == 429
    assert set(response.json()) == {"error", "code"}
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1
    status, headers, content = call(app, infer, V2_BODY, key=key)
    assert_throttled(status, headers, orjson.loads(content), message_key="error")


def test_uploads_past_the_rate_are_429(manage_client, rates, model_storage):
    rates(upload="2/min")
    created = manage_client.post(MODELS, {"name": "m", "version": "1.0.0"}, format="json")
    assert created.status_code == 201
    upload = SimpleUploadedFile("m.onnx", make_iris_model(zipmap=False))
    assert manage_client.post(f"{MODELS}/{created.json()['id']}/upload", {"file": upload}).status_code == 200
    upload.seek(0)
    response = manage_client.post(f"{MODELS}/{created.json()['id']}/upload", {"file": upload})
    assert_throttled(response.status_code, response, response.json())
    assert list((model_storage / "tmp").iterdir()) == []  # the refused upload left no file behind
    # Reads are not throttled.
    assert manage_client.get(MODELS).status_code == 200


def test_each_key_has_its_own_budget(app, iris, make_key, rates):
    rates(predict="2/min")
    _, first = make_key("predict", name="first")
    _, second = make_key("predict", name="second")
    for _ in range(2):
        assert call(app, predict_url(iris["id"]), BODY, key=first)[0] == 200
    assert call(app, predict_url(iris["id"]), BODY, key=first)[0] == 429
    for _ in range(2):
        assert call(app, predict_url(iris["id"]), BODY, key=second)[0] == 200
    assert call(app, predict_url(iris["id"]), BODY, key=second)[0] == 429


def test_no_rate_means_no_throttle(app, iris, make_key, rates):
    rates(predict="")
    _, key = make_key("predict")
    for _ in range(20):
        assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 200


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs Redis: the count is shared through it")
def test_the_count_is_shared_with_another_process(app, iris, make_key, rates, settings):
    """Another process (the same code, the same Redis) spends the key's budget; this one then
    refuses the key's next request."""
    rates(predict="5/min")
    api_key, key = make_key("predict")
    assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 200
    spend = (
        "from access.throttling import check\n"
        f"for _ in range(4): check('predict', {api_key.prefix!r})\n"
        "try:\n"
        f"    check('predict', {api_key.prefix!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    env = {
        **os.environ,
        "REDIS_URL": settings.CACHES["default"]["LOCATION"],
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "THROTTLE_RATE_PREDICT": "5/min",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", spend],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "Throttled"  # it saw this process's request too
    assert call(app, predict_url(iris["id"]), BODY, key=key)[0] == 429


@pytest.mark.parametrize(
    ("rate", "parsed"), [("6000/min", (6000, 60)), ("10/s", (10, 1)), ("5/hour", (5, 3600)), ("1/day", (1, 86400))]
)
def test_rates_use_drf_syntax(rate, parsed):
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["fast", "10/week", "x/min"])
def test_a_bad_rate_is_refused(rate):
    with pytest.raises(ValueError, match="Bad throttle rate"):
        parse_rate(rate)


class _View:
    throttle_scopes = {"POST": "predict"}
    action = None


def _anonymous_request(forwarded_for: str):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    django_request = APIRequestFactory().post("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
    return Request(django_request)


def _allowed(forwarded_for: str) -> bool:
    from access.throttling import KeyRateThrottle, Throttled

    try:
        return KeyRateThrottle().allow_request(_anonymous_request(forwarded_for), _View())
    except Throttled:
        return False


def test_x_forwarded_for_is_ignored_without_a_proxy_count(rates, settings):
    """Without NUM_PROXIES a client cannot pick a new address (and a new budget) per request."""
    rates(predict="1/min")
    assert _allowed("203.0.113.1")
    assert not _allowed("203.0.113.2")  # the same REMOTE_ADDR: the same budget


def test_x_forwarded_for_names_the_client_behind_a_configured_proxy(rates, settings):
    rates(predict="1/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert _allowed("203.0.113.1")
    assert _allowed("203.0.113.2")  # another client behind the proxy
    assert not _allowed("203.0.113.1")
