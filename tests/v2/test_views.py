"""The /v2 routes through Django (and the WSGI fast path), as curl would call them: access,
errors, the repository extension, and the cache and history shared with /api/v1."""

from __future__ import annotations

import gzip
import io

import numpy as np
import orjson
import pytest
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client

from inference.fastpath import PredictFastPath
from inference.history import history
from inference.models import Prediction
from inference.serving import serving_cache
from inference.sessions import get_pool
from registry.models import MLModel
from tests.inference.api import named_predict_url
from tests.inference.factories import make_float16_model, make_int64_model, make_scaled_model, make_string_model

pytestmark = pytest.mark.django_db

ROW = {"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}


def client(key: str | None = None, **extra) -> Client:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return Client(**headers, **extra)


def infer(web: Client, model: str, body: bytes, **headers):
    # No Content-Type, as tritonclient sends none.
    return web.generic("POST", f"/v2/models/{model}/infer", body, content_type="", **headers)


def json_body(*inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": list(inputs) or [ROW], **extra})


@pytest.fixture
def scaled(ready_model):
    return ready_model(make_scaled_model(2.0), name="scaled")


@pytest.fixture
def predict_key(make_key):
    return make_key("predict")[1]


@pytest.fixture
def web(predict_key):
    return client(predict_key)


# --- access ------------------------------------------------------------------------------------


def test_probes_and_server_metadata_are_open():
    anonymous = client()
    assert anonymous.get("/v2/health/live").status_code == 200
    assert anonymous.get("/v2/health/ready").status_code == 200
    metadata = anonymous.get("/v2")
    assert metadata.status_code == 200
    assert metadata.json()["extensions"] == ["binary_tensor_data", "model_repository"]


@pytest.mark.parametrize(
    "route",
    [
        ("GET", "/v2/models/scaled"),
        ("GET", "/v2/models/scaled/ready"),
        ("GET", "/v2/models/scaled/versions/1.0.0"),
        ("POST", "/v2/models/scaled/infer"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/scaled/load"),
    ],
)
def test_routes_without_a_key_are_401_and_with_a_wrong_scope_403(scaled, make_key, route):
    method, path = route
    anonymous = client().generic(method, path, b"", content_type="")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    assert "Authorization: Bearer" in anonymous.json()["error"]
    assert anonymous["WWW-Authenticate"].startswith("Bearer")

    wrong = client("nope.not-a-key").generic(method, path, b"", content_type="")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_api_key")

    scope = "manage" if "repository" in path else "predict"
    other_scope = make_key("read", "manage" if scope == "predict" else "predict")[1]
    forbidden = client(other_scope).generic(method, path, b"", content_type="")
    assert forbidden.status_code == 403
    assert forbidden.json() == {
        "error": f"This API key lacks the '{scope}' scope needed here.",
        "code": "missing_scope",
    }


def test_a_bearer_key_needs_no_csrf_token(scaled, predict_key):
    strict = client(predict_key, enforce_csrf_checks=True)
    assert infer(strict, "scaled", json_body()).status_code == 200


def test_unknown_routes_and_methods_answer_in_the_protocols_format(web):
    missing = web.get("/v2/models/scaled/trace/setting")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert "error" in missing.json()
    wrong_method = web.delete("/v2/models/scaled")
    assert wrong_method.status_code == 405
    assert wrong_method["Allow"] == "GET, HEAD, OPTIONS"
    assert "error" in wrong_method.json()


# --- models ---------------------------------------------------------------------------------------


def test_metadata_lists_ready_versions_and_describes_the_latest(ready_model, web, manage_client):
    ready_model(make_scaled_model(2.0), name="scaled", version="1.0.0")
    newer = ready_model(make_scaled_model(3.0), name="scaled", version="1.10.0")
    ready_model(make_scaled_model(4.0), name="scaled", version="1.2.0")
    metadata = web.get("/v2/models/scaled").json()
    assert metadata["versions"] == ["1.10.0", "1.2.0", "1.0.0"]  # semver order, newest first
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}]
    manage_client.post(f"/api/v1/models/{newer['id']}/archive")
    assert web.get("/v2/models/scaled").json()["versions"] == ["1.2.0", "1.0.0"]


def test_ready_and_not_ready(ready_model, web, manage_client):
    model = ready_model(make_scaled_model(2.0), name="scaled")
    assert web.get("/v2/models/scaled/ready").status_code == 200
    assert web.get("/v2/models/scaled/versions/1.0.0/ready").status_code == 200
    assert web.get("/v2/models/scaled/versions/2.0.0/ready").status_code == 404
    assert web.get("/v2/models/other/ready").status_code == 404

    manage_client.post(f"/api/v1/models/{model['id']}/archive")
    archived = web.get("/v2/models/scaled/versions/1.0.0/ready")
    assert archived.status_code == 503
    assert "archived" in archived.json()["error"]
    no_ready_version = web.get("/v2/models/scaled/ready")
    assert no_ready_version.status_code == 503
    assert no_ready_version.json()["error"].startswith("No version of model 'scaled' is ready")
    assert infer(web, "scaled", json_body()).status_code == 503


# --- infer -----------------------------------------------------------------------------------------


def test_infer_json(scaled, web):
    response = infer(web, "scaled", json_body(id="abc", parameters={"anything": 1}))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "model_name": "scaled",
        "model_version": "1.0.0",
        "id": "abc",
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [1, 3], "data": [2.0, 4.0, 6.0]}],
    }


def test_infer_binary_in_and_out(scaled, web):
    x = np.array([[1.5, 2.5, -1.0], [0.0, 8.0, 9.0]], dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}],
            "outputs": [{"name": "Y", "parameters": {"binary_data": True}}],
        }
    )
    response = infer(web, "scaled", header + x.tobytes(), HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)))
    assert response.status_code == 200
    length = int(response["Inference-Header-Content-Length"])
    document = orjson.loads(response.content[:length])
    assert document["outputs"] == [
        {"name": "Y", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
    ]
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f4").reshape(2, 3), x * 2)


def test_raw_binary_body(ready_model, web):
    ready_model(make_int64_model(), name="ints")
    x = np.array([[1, 2], [3, 4], [5, 6]], dtype="<i8")
    response = infer(web, "ints", x.tobytes(), HTTP_INFERENCE_HEADER_CONTENT_LENGTH="0")
    assert response.status_code == 200
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["S"] == {"name": "S", "datatype": "INT64", "shape": [3], "data": [3, 7, 11]}


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_bodies(scaled, web, coding):
    import zlib

    body = json_body()
    compressed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    response = infer(web, "scaled", compressed, HTTP_CONTENT_ENCODING=coding)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0]


def test_body_limits_apply_before_and_after_decompression(scaled, web, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2000
    too_big = infer(web, "scaled", json_body() + b" " * 2000)
    assert (too_big.status_code, too_big.json()["code"]) == (413, "body_too_large")
    bomb = gzip.compress(json_body() + b" " * 1_000_000)
    assert len(bomb) < 2000
    exploded = infer(web, "scaled", bomb, HTTP_CONTENT_ENCODING="gzip")
    assert (exploded.status_code, exploded.json()["code"]) == (413, "body_too_large")
    unsupported = infer(web, "scaled", json_body(), HTTP_CONTENT_ENCODING="br")
    assert unsupported.status_code == 415
    assert "gzip or deflate" in unsupported.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff random bytes",
        b"[1, 2]",
        b'{"inputs": "X"}',
        b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, Infinity]}]}',
        b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": '
        + b"[" * 34
        + b"1"
        + b"]" * 34
        + b"}]}",
        b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [99999999999999999999], "data": []}]}',
        b'{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1e400, 2, 3]}]}',
    ],
)
def test_client_mistakes_are_400_with_an_error_message(scaled, web, body):
    response = infer(web, "scaled", body)
    assert response.status_code == 400
    assert set(response.json()) == {"error", "code"}
    assert response.json()["error"]


def test_a_form_body_is_400(scaled, web):
    response = web.post("/v2/models/scaled/infer", {"inputs": "X"})  # multipart, parsed by the middleware
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")


def test_header_length_mistakes_are_400(scaled, web):
    for value in ("abc", "-1", "99999"):
        response = infer(web, "scaled", json_body(), HTTP_INFERENCE_HEADER_CONTENT_LENGTH=value)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_header_length")


def test_non_finite_binary_values_are_refused_unless_the_model_allows_them(scaled, web):
    x = np.array([[1.0, np.nan, 3.0]], dtype=np.float32)
    header = orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}]}
    )
    length = str(len(header))
    refused = infer(web, "scaled", header + x.tobytes(), HTTP_INFERENCE_HEADER_CONTENT_LENGTH=length)
    assert (refused.status_code, refused.json()["code"]) == (400, "non_finite_value")
    MLModel.objects.filter(name="scaled").update(allow_non_finite=True)
    serving_cache.clear()
    allowed = infer(web, "scaled", header + x.tobytes(), HTTP_INFERENCE_HEADER_CONTENT_LENGTH=length)
    assert allowed.status_code == 200
    assert allowed.json()["outputs"][0]["data"] == [2.0, None, 6.0]  # JSON has no NaN


def test_bytes_inputs_and_a_subset_of_outputs(ready_model, web):
    ready_model(make_string_model(), name="strings")
    text = {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["setosa", "iris?"]}
    response = infer(web, "strings", json_body(text, outputs=[{"name": "label"}]))
    assert response.json()["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [2], "data": [0, -1]}]


# --- shared with /api/v1 -------------------------------------------------------------------------


def test_the_cache_is_shared_with_api_v1_predict(scaled, web, predict_key):
    predict = client(predict_key).post(
        named_predict_url("scaled"), {"input_data": {"X": [[1.0, 2.0, 3.0]]}}, content_type="application/json"
    )
    assert predict["X-Cache"] == "MISS"
    response = infer(web, "scaled", json_body())
    assert response["X-Cache"] == "HIT"
    assert response.json()["outputs"][0]["data"] == predict.json()["output_data"]["Y"][0]
    skipped = infer(web, "scaled", json_body(parameters={"skip_cache": True}))
    assert skipped["X-Cache"] == "MISS"


def test_binary_outputs_from_the_cache_are_exact_even_when_json_had_nulls(ready_model, web):
    ready_model(make_float16_model(), name="halves")
    row = {"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 70000.0, -70000.0]}
    first = infer(web, "halves", json_body(row))
    assert first.json()["outputs"][0]["data"] == [1.0, None, None]
    binary = infer(web, "halves", json_body(row, parameters={"binary_data_output": True}))
    length = int(binary["Inference-Header-Content-Length"])
    values = np.frombuffer(binary.content[length:], "<f2")
    assert values.tolist() == [1.0, float("inf"), float("-inf")]
    # Without non-finite values, the binary answer comes from the JSON the cache keeps.
    plain = {**row, "data": [1.0, 2.0, 3.0]}
    infer(web, "halves", json_body(plain))
    cached = infer(web, "halves", json_body(plain, parameters={"binary_data_output": True}))
    assert cached["X-Cache"] == "HIT"
    length = int(cached["Inference-Header-Content-Length"])
    assert np.frombuffer(cached.content[length:], "<f2").tolist() == [1.0, 2.0, 3.0]


def test_history_records_v2_predictions(scaled, web, make_key):
    api_key, raw = make_key("predict", name="v2-caller")
    response = infer(client(raw), "scaled", json_body(outputs=[{"name": "Y"}]))
    assert response.status_code == 200
    history.flush()
    prediction = Prediction.objects.get()
    assert prediction.api_key_id == api_key.pk
    assert (prediction.model_name, prediction.model_version) == ("scaled", "1.0.0")
    assert prediction.input_data == {"X": [[1.0, 2.0, 3.0]]}
    assert prediction.output_data == {"Y": [[2.0, 4.0, 6.0]]}


# --- the repository extension ---------------------------------------------------------------------


@pytest.fixture
def manager(make_key):
    return client(make_key("manage")[1])


def test_repository_index(ready_model, register, manager, manage_client):
    ready_model(make_scaled_model(2.0), name="scaled", version="1.0.0")
    archived = ready_model(make_scaled_model(3.0), name="scaled", version="2.0.0")
    manage_client.post(f"/api/v1/models/{archived['id']}/archive")
    register(b"not onnx", name="broken")
    index = manager.post("/v2/repository/index", b"", content_type="").json()
    assert index == [
        {"name": "broken", "version": "1.0.0", "state": "UNAVAILABLE", "reason": "error: invalid_model"},
        {"name": "scaled", "version": "2.0.0", "state": "UNAVAILABLE", "reason": "archived"},
        {"name": "scaled", "version": "1.0.0", "state": "READY", "reason": ""},
    ]
    ready = manager.post("/v2/repository/index", b'{"ready": true}', content_type="").json()
    assert ready == [{"name": "scaled", "version": "1.0.0", "state": "READY", "reason": ""}]
    assert manager.post("/v2/repository/index", b'{"ready": 1}', content_type="").status_code == 400


def test_load_and_unload_move_sessions_in_and_out_of_the_pool(scaled, manager):
    sha256 = MLModel.objects.get(name="scaled").file_sha256
    assert sha256 not in get_pool().loaded()
    assert manager.post("/v2/repository/models/scaled/load", b"{}", content_type="").status_code == 200
    assert sha256 in get_pool().loaded()
    unload = manager.post(
        "/v2/repository/models/scaled/unload", b'{"parameters": {"unload_dependents": false}}', content_type=""
    )
    assert unload.status_code == 200
    assert sha256 not in get_pool().loaded()


def test_load_and_unload_mistakes(scaled, manager):
    assert manager.post("/v2/repository/models/nope/load", b"", content_type="").status_code == 404
    assert manager.post("/v2/repository/models/nope/unload", b"", content_type="").status_code == 404
    with_config = manager.post(
        "/v2/repository/models/scaled/load", b'{"parameters": {"config": "{}"}}', content_type=""
    )
    assert (with_config.status_code, with_config.json()["code"]) == (400, "unsupported_parameter")
    assert manager.post("/v2/repository/models/scaled/load", b"{oops", content_type="").status_code == 400


# --- the WSGI fast path --------------------------------------------------------------------------


def call_wsgi(path: str, body: bytes, key: str, **extra) -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
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
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    # As Django's test client does: the handler would close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(PredictFastPath(get_wsgi_application())(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return captured["status"], captured["headers"], content


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/scaled/infer", json_body(parameters={"skip_cache": True})),
        ("/v2/models/scaled/versions/1.0.0/infer", json_body(id="x", parameters={"skip_cache": True})),
        ("/v2/models/scaled/versions/9.0.0/infer", json_body()),
        ("/v2/models/scaled/infer", b"{"),
        ("/v2/models/nope/infer", json_body()),
    ],
)
def test_the_fast_path_answers_as_the_django_view(scaled, predict_key, path, body):
    status, headers, content = call_wsgi(path, body, predict_key)
    django = client(predict_key).generic("POST", path, body, content_type="")
    assert status == django.status_code
    assert orjson.loads(content) == django.json()
    assert headers["Content-Type"] == django["Content-Type"]
    assert headers["X-Content-Type-Options"] == django["X-Content-Type-Options"] == "nosniff"


def test_the_fast_path_answers_binary_requests(scaled, predict_key):
    x = np.ones((2, 3), dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}],
            "parameters": {"binary_data_output": True},
        }
    )
    status, headers, content = call_wsgi(
        "/v2/models/scaled/infer",
        gzip.compress(header + x.tobytes()),
        predict_key,
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
        HTTP_CONTENT_ENCODING="gzip",
    )
    assert status == 200
    length = int(headers["Inference-Header-Content-Length"])
    assert np.frombuffer(content[length:], "<f4").tolist() == [2.0] * 6
