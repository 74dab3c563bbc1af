"""Request limits of synchronous inference: rows per request (MAX_BATCH_ROWS), the inference
timeout (INFERENCE_TIMEOUT_SECONDS, 504 inference_timeout) on /api/v1 predict through Django
and through the WSGI fast path and on /v2 infer, and the cap on runs in flight per model
(MAX_INFLIGHT_PER_MODEL, 503 with Retry-After). Body size, element count and nesting depth
are covered in test_predict_api.py."""

from __future__ import annotations

import threading
import time
from uuid import UUID

import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.test import Client

from inference.fastpath import PredictFastPath
from inference.limits import in_flight
from tests.inference.api import MODELS, named_predict_url, predict, predict_url
from tests.inference.slow_models import make_sleepy_model
from tests.inference.test_fastpath import call
from tests.registry.onnx_factories import make_iris_model

pytestmark = pytest.mark.django_db

SLOW_ROW = [[1.0, 1.0, 1.0, 1.0]]  # minutes of work for the sleepy model unless stopped
QUICK_ROW = [[0.0, 0.0, 0.0, 0.0]]  # no iterations at all


def v2_infer(client, name: str, rows, *, datatype: str = "FP32"):
    flat = [value for row in rows for value in row]
    body = {"inputs": [{"name": "X", "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": flat}]}
    return client.post(f"/v2/models/{name}/infer", orjson.dumps(body), content_type="application/json")


@pytest.fixture
def sleepy(ready_model):
    return ready_model(make_sleepy_model(), name="sleepy")


@pytest.fixture
def key_header(predict_client):
    return predict_client._credentials["HTTP_AUTHORIZATION"]


def test_rows_over_max_batch_rows_are_400_naming_the_input(ready_model, predict_client, settings):
    settings.MAX_BATCH_ROWS = 3
    iris = ready_model(make_iris_model(zipmap=False), name="iris")
    assert predict(predict_client, iris["id"], {"X": [[5.1, 3.5, 1.4, 0.2]] * 3}).status_code == 200
    response = predict(predict_client, iris["id"], {"X": [[5.1, 3.5, 1.4, 0.2]] * 4})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "too_many_rows"
    assert "'X' has 4 rows" in body["detail"] and "MAX_BATCH_ROWS" in body["detail"]

    v2 = v2_infer(predict_client, "iris", [[5.1, 3.5, 1.4, 0.2]] * 4)
    assert v2.status_code == 400
    assert v2.json()["code"] == "too_many_rows"
    assert "MAX_BATCH_ROWS" in v2.json()["error"]


def test_max_batch_rows_zero_turns_the_cap_off(ready_model, predict_client, settings):
    settings.MAX_BATCH_ROWS = 0
    iris = ready_model(make_iris_model(zipmap=False), name="iris")
    assert predict(predict_client, iris["id"], {"X": [[5.1, 3.5, 1.4, 0.2]] * 500}).status_code == 200


def test_slow_predict_is_504_and_the_model_serves_the_next_request(sleepy, predict_client, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    response = predict(predict_client, sleepy["id"], {"X": SLOW_ROW}, skip_cache=True)
    assert response.status_code == 504, response.content[:300]
    body = response.json()
    assert body["code"] == "inference_timeout"
    assert "INFERENCE_TIMEOUT_SECONDS" in body["detail"]
    quick = predict(predict_client, sleepy["id"], {"X": QUICK_ROW}, skip_cache=True)
    assert quick.status_code == 200
    assert quick.json()["output_data"]["Y"] == QUICK_ROW


def test_slow_predict_is_504_on_the_fast_path(sleepy, key_header, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    app_body = orjson.dumps({"input_data": {"X": SLOW_ROW}, "skip_cache": True})
    app = PredictFastPath(get_wsgi_application())
    key = key_header.removeprefix("Bearer ")
    status, headers, content = call(app, named_predict_url("sleepy"), app_body, key=key)
    assert status == 504
    assert orjson.loads(content)["code"] == "inference_timeout"
    status, _, content = call(app, predict_url(sleepy["id"]), orjson.dumps({"input_data": {"X": QUICK_ROW}}), key=key)
    assert status == 200, content


def test_slow_v2_infer_is_504_with_the_protocol_error_body(sleepy, predict_client, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    response = v2_infer(predict_client, "sleepy", SLOW_ROW)
    assert response.status_code == 504
    body = response.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == "inference_timeout"
    assert v2_infer(predict_client, "sleepy", QUICK_ROW).status_code == 200


def test_a_batched_model_times_out_too(sleepy, manage_client, predict_client, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    patched = manage_client.patch(
        f"{MODELS}/{sleepy['id']}", {"batching": {"enabled": True, "max_queue_delay_microseconds": 100}}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    response = predict(predict_client, sleepy["id"], {"X": SLOW_ROW}, skip_cache=True)
    assert (response.status_code, response.json()["code"]) == (504, "inference_timeout")
    assert predict(predict_client, sleepy["id"], {"X": QUICK_ROW}, skip_cache=True).status_code == 200


def test_timeout_zero_lets_a_run_finish(ready_model, predict_client, settings):
    settings.INFERENCE_TIMEOUT_SECONDS = 0
    quickish = ready_model(make_sleepy_model(iterations_per_unit=1000), name="quickish")
    response = predict(predict_client, quickish["id"], {"X": SLOW_ROW}, skip_cache=True)
    assert response.status_code == 200
    assert response.json()["output_data"]["Y"] == SLOW_ROW


@pytest.mark.django_db(transaction=True)
def test_one_run_over_max_inflight_is_503_with_retry_after(manage_client, client_for, settings):
    settings.MAX_INFLIGHT_PER_MODEL = 1
    settings.INFERENCE_TIMEOUT_SECONDS = 30
    upload = SimpleUploadedFile("m.onnx", make_sleepy_model(), content_type="application/octet-stream")
    sleepy = manage_client.post(MODELS, {"name": "sleepy", "version": "1.0.0", "file": upload}, format="multipart")
    assert sleepy.json()["status"] == "ready", sleepy.json()
    model_id = sleepy.json()["id"]
    raw = client_for("predict")._credentials["HTTP_AUTHORIZATION"]
    results = {}

    def slow_request():  # seconds of work: the other requests come meanwhile
        client = Client(HTTP_AUTHORIZATION=raw)
        body = orjson.dumps({"input_data": {"X": [[0.2, 0.2, 0.2, 0.2]]}, "skip_cache": True})
        try:
            results["slow"] = client.post(predict_url(model_id), body, content_type="application/json")
        finally:
            connection.close()

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 30
    while in_flight.running(UUID(model_id)) == 0:
        assert worker.is_alive() and time.monotonic() < deadline, results
        time.sleep(0.01)
    client = Client(HTTP_AUTHORIZATION=raw)
    body = orjson.dumps({"input_data": {"X": QUICK_ROW}, "skip_cache": True})
    refused = client.post(predict_url(model_id), body, content_type="application/json")
    fast_status, fast_headers, fast_content = call(
        PredictFastPath(get_wsgi_application()), predict_url(model_id), body, key=raw.removeprefix("Bearer ")
    )
    worker.join(60)
    assert (fast_status, fast_headers["Retry-After"]) == (503, "1")  # the fast path says the same
    assert orjson.loads(fast_content)["code"] == "model_overloaded"
    assert refused.status_code == 503
    assert refused.json()["code"] == "model_overloaded"
    assert refused["Retry-After"] == "1"
    assert results["slow"].status_code == 200  # the admitted request was answered
    assert client.post(predict_url(model_id), body, content_type="application/json").status_code == 200
