"""A model file changed on disk after validation is refused when a session would be created
from it, whichever way the request comes (the WSGI fast path, /v2 infer). One server's view is
not the truth: the first answer is `503 model_file_unavailable` with Retry-After and the request
id, the model stays `ready`, the failure is logged and counted, and a confirmation is asked for.
Once the confirmation (a worker's task, here run in the test's thread) has read the file from the
storage itself and found it changed, the model is `error` with `checksum_mismatch` and nothing is
served from it again, not even predictions cached before. (Through the Django views:
test_sessions.py.)"""

from __future__ import annotations

import logging

import orjson
import pytest
from django.core.wsgi import get_wsgi_application
from prometheus_client import REGISTRY

from inference.fastpath import PredictFastPath
from inference.sessions import get_pool
from registry.models import MLModel
from registry.storage import ModelStore
from registry.tasks import confirm_model_file
from tests.inference.api import MODELS, predict_url
from tests.inference.factories import make_scaled_model
from tests.inference.test_fastpath import call

pytestmark = pytest.mark.django_db

ROW = {"X": [[1.0, 2.0, 3.0]]}


@pytest.fixture
def app():
    return PredictFastPath(get_wsgi_application())


def tamper(model: dict) -> None:
    ModelStore().path_for(model["file_sha256"]).write_bytes(make_scaled_model(1000.0))
    get_pool().clear()  # a fresh process, or the session evicted meanwhile


def failures(model: dict, code: str) -> float:
    labels = {"model": model["name"], "version": model["version"], "code": code}
    return REGISTRY.get_sample_value("modelforge_model_file_failures_total", labels) or 0.0


def test_tampered_file_is_503_on_the_fast_path_until_a_worker_confirms_it(
    app, ready_model, make_key, manage_client, caplog, django_capture_on_commit_callbacks
):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    _, key = make_key("predict")
    status, _, content = call(app, predict_url(model["id"]), orjson.dumps({"input_data": ROW}), key=key)
    assert (status, orjson.loads(content)["output_data"]) == (200, {"Y": [[2.0, 4.0, 6.0]]})
    tamper(model)
    counted = failures(model, "checksum_mismatch")

    body = orjson.dumps({"input_data": {"X": [[4.0, 5.0, 6.0]]}})
    with caplog.at_level(logging.ERROR, logger="registry.services"), django_capture_on_commit_callbacks() as asked:
        status, headers, content = call(app, predict_url(model["id"]), body, key=key)
        again, _, _ = call(app, predict_url(model["id"]), body, key=key)
    assert (status, again) == (503, 503)
    answer = orjson.loads(content)
    assert answer["code"] == "model_file_unavailable"
    assert headers["Retry-After"] == "5"
    assert headers["X-Request-ID"] in answer["detail"]
    assert model["file_sha256"] not in answer["detail"]  # the details are in the log
    assert any("asking for a confirmation" in record.getMessage() for record in caplog.records)
    assert failures(model, "checksum_mismatch") == counted + 2
    assert len(asked) == 1  # one confirmation for both requests
    assert manage_client.get(f"{MODELS}/{model['id']}").json()["status"] == "ready"

    # The worker reads the object from the storage itself, twice, and only then condemns it.
    assert confirm_model_file(model["id"], model["file_sha256"]) == "checksum_mismatch"
    stored = manage_client.get(f"{MODELS}/{model['id']}").json()
    assert (stored["status"], stored["error_code"]) == ("error", "checksum_mismatch")
    # The very request answered before (in the prediction cache) is not answered from it either.
    status, _, content = call(app, predict_url(model["id"]), orjson.dumps({"input_data": ROW}), key=key)
    assert status == 409
    assert orjson.loads(content)["code"] == "model_not_ready"
    assert "checksum_mismatch" in orjson.loads(content)["detail"]
    assert model["file_sha256"] not in get_pool().loaded()


def test_tampered_file_is_503_on_v2_infer(ready_model, predict_client):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    tamper(model)
    body = {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    response = predict_client.post("/v2/models/scaler/infer", orjson.dumps(body), content_type="application/json")
    assert response.status_code == 503
    assert response.json()["code"] == "model_file_unavailable"
    assert response["Retry-After"] == "5"
    assert "try again" in response.json()["error"]
    assert MLModel.objects.get(pk=model["id"]).status == MLModel.Status.READY

    confirm_model_file(model["id"], model["file_sha256"])
    refused = predict_client.post("/v2/models/scaler/infer", orjson.dumps(body), content_type="application/json")
    assert (refused.status_code, refused.json()["code"]) == (503, "model_not_ready")  # as the protocol has it
