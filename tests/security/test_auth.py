"""Keys (REFERENCE §4, §5): a missing, wrong, wrong-scope, revoked or expired key is refused
with its exact status and code on every kind of route, on both predict paths and on /v2;
the refused request leaves no trace (no prediction, no job) and the next good one answers."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import Job
from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import (
    IRIS_ROW,
    SENDERS,
    assert_history_is,
    assert_still_serves,
    predict_path,
)

pytestmark = pytest.mark.django_db

# (case, status, code) for every kind of bad key.
BAD_KEYS = [
    ("missing", 401, "not_authenticated"),
    ("wrong", 401, "invalid_api_key"),
    ("wrong-scope", 403, "missing_scope"),
    ("revoked", 401, "api_key_revoked"),
    ("expired", 401, "api_key_expired"),
]


@pytest.fixture
def iris(ready_model):
    return ready_model(make_iris_model(zipmap=False), name="iris")


@pytest.fixture
def bad_key(make_key):
    """bad_key(case, scope) -> the raw key (None for "missing") a client in that case sends."""

    def _key(case: str, scope: str) -> str | None:
        if case == "missing":
            return None
        if case == "wrong":
            return make_key(scope)[1].partition(".")[0] + ".not-the-secret"
        if case == "wrong-scope":
            return make_key(*({"read", "predict", "manage"} - {scope}))[1]
        if case == "revoked":
            return make_key(scope, revoked=True)[1]
        return make_key(scope, expiry_date=timezone.now() - timedelta(seconds=1))[1]

    return _key


@pytest.fixture
def good_key(make_key):
    return make_key("read", "predict", "manage", name="good")[1]


def get(path: str, key: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return Client().get(path, **headers)


@pytest.mark.parametrize(("case", "status", "code"), BAD_KEYS)
@pytest.mark.parametrize("path", sorted(SENDERS))
def test_bad_key_on_predict(iris, bad_key, good_key, path, case, status, code):
    send = SENDERS[path]
    reply = send(predict_path(iris["id"]), orjson.dumps({"input_data": IRIS_ROW}), key=bad_key(case, "predict"))
    assert (reply.status, reply.code) == (status, code)
    if status == 401:
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert_history_is(iris["id"], 0)
    assert_still_serves(send, iris["id"], good_key)
    assert_history_is(iris["id"], 1)


@pytest.mark.parametrize(("case", "status", "code"), BAD_KEYS)
@pytest.mark.parametrize("path", sorted(SENDERS))
def test_bad_key_on_v2_infer(iris, bad_key, good_key, path, case, status, code):
    send = SENDERS[path]
    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
    url = "/v2/models/iris/infer"
    reply = send(url, body, key=bad_key(case, "predict"))
    assert (reply.status, reply.code) == (status, code)
    assert reply.json()["error"]
    assert_history_is(iris["id"], 0)
    good = send(url, body, key=good_key)
    assert good.status == 200
    assert [output["name"] for output in good.json()["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize(("case", "status", "code"), BAD_KEYS)
def test_bad_key_on_registry_read(iris, bad_key, good_key, case, status, code):
    response = get("/api/v1/models", bad_key(case, "read"))
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert get("/api/v1/models", good_key).json()["count"] == 1


@pytest.mark.parametrize(("case", "status", "code"), BAD_KEYS)
def test_bad_key_on_registry_write(iris, bad_key, good_key, case, status, code):
    key = bad_key(case, "manage")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    response = Client().post(f"/api/v1/models/{iris['id']}/archive", **headers)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert get(f"/api/v1/models/{iris['id']}", good_key).json()["status"] == "ready"


@pytest.mark.parametrize(("case", "status", "code"), BAD_KEYS)
def test_bad_key_on_job_create(iris, bad_key, good_key, case, status, code):
    key = bad_key(case, "predict")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    body = orjson.dumps({"model_id": iris["id"], "input_data": IRIS_ROW})
    response = Client().post("/api/v1/jobs", body, content_type="application/json", **headers)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert Job.objects.count() == 0
    assert_still_serves(SENDERS["fastpath"], iris["id"], good_key)


@pytest.mark.parametrize(("case", "status", "code"), [case for case in BAD_KEYS if case[0] != "wrong-scope"])
def test_bad_key_on_schema_and_docs(bad_key, good_key, case, status, code):
    # The schema view renders its errors in the negotiated format (YAML by default).
    key = bad_key(case, "read")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    schema = Client().get("/api/v1/schema", HTTP_ACCEPT="application/json", **headers)
    assert (schema.status_code, schema.json()["code"]) == (status, code)
    assert get("/api/v1/docs", key).status_code == status
    assert get("/api/v1/schema", good_key).status_code == 200


def test_probes_answer_without_a_key():
    for path in ("/api/v1/live", "/api/v1/ready", "/v2/health/live", "/v2/health/ready"):
        assert get(path, None).status_code == 200, path
