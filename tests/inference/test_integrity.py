"""A model file changed on disk after validation is refused when a session would be created
from it, whichever way the request comes (the WSGI fast path, /v2 infer): the model is marked
`error` with `checksum_mismatch`, the event is logged, and nothing is served from it again,
not even predictions cached before. (Through the Django views: test_sessions.py.)"""

from __future__ import annotations

import logging

import orjson
import pytest
from django.core.wsgi import get_wsgi_application

from inference.fastpath import PredictFastPath
from inference.sessions import get_pool
from registry.storage import ModelStore
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


def test_tampered_file_is_refused_on_the_fast_path_and_marked_error(app, ready_model, make_key, manage_client, caplog):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    _, key = make_key("predict")
    status, _, content = call(app, predict_url(model["id"]), orjson.dumps({"input_data": ROW}), key=key)
    assert (status, orjson.loads(content)["output_data"]) == (200, {"Y": [[2.0, 4.0, 6.0]]})
    tamper(model)

    with caplog.at_level(logging.ERROR, logger="registry.services"):
        body = orjson.dumps({"input_data": {"X": [[4.0, 5.0, 6.0]]}})
        status, _, content = call(app, predict_url(model["id"]), body, key=key)
    assert status == 409
    assert orjson.loads(content)["code"] == "checksum_mismatch"
    assert any("integrity" in record.getMessage() for record in caplog.records)

    stored = manage_client.get(f"{MODELS}/{model['id']}").json()
    assert (stored["status"], stored["error_code"]) == ("error", "checksum_mismatch")
    # The very request answered before (in the prediction cache) is not answered from it either.
    status, _, content = call(app, predict_url(model["id"]), orjson.dumps({"input_data": ROW}), key=key)
    assert status == 409
    assert orjson.loads(content)["code"] == "model_not_ready"
    assert model["file_sha256"] not in get_pool().loaded()


def test_tampered_file_is_refused_on_v2_infer(ready_model, predict_client):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    tamper(model)
    body = {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    response = predict_client.post("/v2/models/scaler/infer", orjson.dumps(body), content_type="application/json")
    assert response.status_code == 503  # not ready, as the protocol has it
    assert response.json()["code"] == "checksum_mismatch"
    assert "sha256" in response.json()["error"]
