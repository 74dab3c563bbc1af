"""Bad request bodies (REFERENCE §4, §5) on /api/v1 predict, through Django's view and the
WSGI fast path, and on /v2 infer: each is refused with its exact status and code, nothing
reaches the model or the history, and the next good request answers."""

from __future__ import annotations

import orjson
import pytest

from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import (
    IRIS_ROW,
    SENDERS,
    assert_history_is,
    assert_still_serves,
    predict_path,
)

pytestmark = pytest.mark.django_db

ROW = [5.1, 3.5, 1.4, 0.2]


def nested(depth: int) -> bytes:
    return b'{"input_data": {"X": ' + b"[" * depth + b"1" + b"]" * depth + b"}}"


# (case, raw /api/v1 predict body, status, code). The iris model takes "X" float32 [N, 4].
PREDICT_CASES = [
    ("not-json", b"{input_data", 400, "parse_error"),
    ("empty-body", b"", 400, "parse_error"),
    ("deep-nesting", nested(40), 400, "nesting_too_deep"),
    ("ragged", orjson.dumps({"input_data": {"X": [ROW, [1.0]]}}), 400, "ragged_array"),
    ("dtype-string", orjson.dumps({"input_data": {"X": [["a", "b", "c", "d"]]}}), 400, "invalid_dtype"),
    ("dtype-bool", orjson.dumps({"input_data": {"X": [[True, False, True, False]]}}), 400, "invalid_dtype"),
    ("rank", orjson.dumps({"input_data": {"X": ROW}}), 400, "invalid_shape"),
    ("shape", orjson.dumps({"input_data": {"X": [[1.0, 2.0, 3.0]]}}), 400, "invalid_shape"),
    ("unknown-input-name", orjson.dumps({"input_data": {"X": [ROW], "Y": [ROW]}}), 400, "unknown_input"),
    ("missing-input", orjson.dumps({"input_data": {}}), 400, "missing_input"),
    ("nan-literal", b'{"input_data": {"X": [[NaN, 1, 2, 3]]}}', 400, "non_finite_value"),
    ("infinity-literal", b'{"input_data": {"X": [[Infinity, 1, 2, 3]]}}', 400, "non_finite_value"),
    ("nan-string", orjson.dumps({"input_data": {"X": [["nan", 1, 2, 3]]}}), 400, "non_finite_value"),
    ("1e400-string", orjson.dumps({"input_data": {"X": [["1e400", 1, 2, 3]]}}), 400, "non_finite_value"),
    ("1e400-number", b'{"input_data": {"X": [[1e400, 1, 2, 3]]}}', 400, "non_finite_value"),
    ("too-many-elements", orjson.dumps({"input_data": {"X": [ROW] * 300}}), 400, "too_many_elements"),
]


@pytest.fixture
def iris(ready_model, settings):
    settings.MAX_INPUT_ELEMENTS = 1000
    return ready_model(make_iris_model(zipmap=False), name="iris")


@pytest.fixture
def key(make_key):
    return make_key("read", "predict", name="caller")[1]


@pytest.mark.parametrize(("case", "body", "status", "code"), PREDICT_CASES, ids=[case[0] for case in PREDICT_CASES])
@pytest.mark.parametrize("path", sorted(SENDERS))
def test_bad_predict_body(iris, key, path, case, body, status, code):
    send = SENDERS[path]
    reply = send(predict_path(iris["id"]), body, key=key)
    assert (reply.status, reply.code) == (status, code), reply.content[:300]
    assert reply.json()["detail"]
    assert_history_is(iris["id"], 0)
    assert_still_serves(send, iris["id"], key)
    assert_history_is(iris["id"], 1)


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_body_over_the_limit_is_413(iris, key, settings, path):
    settings.MAX_REQUEST_BODY_BYTES = 200
    send = SENDERS[path]
    reply = send(predict_path(iris["id"]), orjson.dumps({"input_data": {"X": [ROW] * 20}}), key=key)
    assert (reply.status, reply.code) == (413, "body_too_large")
    assert_history_is(iris["id"], 0)
    assert_still_serves(send, iris["id"], key)


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_predict_on_a_model_not_ready_is_409(manage_client, iris, key, path):
    pending = manage_client.post("/api/v1/models", {"name": "later", "version": "1.0.0"}, format="json").json()
    send = SENDERS[path]
    reply = send(predict_path(pending["id"]), orjson.dumps({"input_data": IRIS_ROW}), key=key)
    assert (reply.status, reply.code) == (409, "model_not_ready")
    named = send("/api/v1/models/by-name/later/predict", orjson.dumps({"input_data": IRIS_ROW}), key=key)
    assert (named.status, named.code) == (404, "model_not_found")
    assert_still_serves(send, iris["id"], key)


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_predict_on_an_archived_model_is_409(manage_client, ready_model, iris, key, path):
    old = ready_model(make_iris_model(zipmap=False), name="retired")
    send = SENDERS[path]
    assert_still_serves(send, old["id"], key)  # loaded and cached: the archive must still win
    assert manage_client.post(f"/api/v1/models/{old['id']}/archive").status_code == 200
    reply = send(predict_path(old["id"]), orjson.dumps({"input_data": IRIS_ROW, "skip_cache": True}), key=key)
    assert (reply.status, reply.code) == (409, "model_archived")
    cached = send(predict_path(old["id"]), orjson.dumps({"input_data": IRIS_ROW}), key=key)
    assert (cached.status, cached.code) == (409, "model_archived")
    assert_history_is(old["id"], 1)
    assert_still_serves(send, iris["id"], key)


# --- /v2 infer ----------------------------------------------------------------------------------


def v2_body(data, *, shape=(1, 4), datatype="FP32", name="X") -> bytes:
    return orjson.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]})


V2_CASES = [
    ("not-json", b"{inputs", 400, "parse_error"),
    (
        "deep-nesting",
        b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": '
        + b"[" * 40
        + b"1"
        + b"]" * 40
        + b"}]}",
        400,
        "nesting_too_deep",
    ),
    ("ragged", v2_body([ROW, [1.0]], shape=(2, 4)), 400, "ragged_array"),
    ("dtype", v2_body(ROW, datatype="FP64"), 400, "datatype_mismatch"),
    ("rank", v2_body(ROW, shape=(4,)), 400, "invalid_shape"),
    ("shape", v2_body([1.0, 2.0, 3.0], shape=(1, 3)), 400, "invalid_shape"),
    ("elements-vs-shape", v2_body(ROW, shape=(2, 4)), 400, "invalid_shape"),
    ("unknown-input-name", v2_body(ROW, name="Y"), 400, "unknown_input"),
    (
        "nan-literal",
        b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, 2, 3]}]}',
        400,
        "non_finite_value",
    ),
    (
        "infinity-literal",
        b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [Infinity, 1, 2, 3]}]}',
        400,
        "non_finite_value",
    ),
    ("1e400-string", v2_body(["1e400", 1, 2, 3]), 400, "non_finite_value"),
    (
        "1e400-number",
        b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1e400, 1, 2, 3]}]}',
        400,
        "non_finite_value",
    ),
    ("too-many-elements", v2_body(ROW * 300, shape=(300, 4)), 400, "too_many_elements"),
]


@pytest.mark.parametrize(("case", "body", "status", "code"), V2_CASES, ids=[case[0] for case in V2_CASES])
@pytest.mark.parametrize("path", sorted(SENDERS))
def test_bad_v2_infer_body(iris, key, path, case, body, status, code):
    send = SENDERS[path]
    reply = send("/v2/models/iris/infer", body, key=key)
    assert (reply.status, reply.code) == (status, code), reply.content[:300]
    assert reply.json()["error"]
    assert_history_is(iris["id"], 0)
    good = send("/v2/models/iris/infer", v2_body(ROW), key=key)
    assert good.status == 200
    assert_history_is(iris["id"], 1)


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_v2_body_over_the_limit_is_413(iris, key, settings, path):
    settings.MAX_REQUEST_BODY_BYTES = 200
    send = SENDERS[path]
    reply = send("/v2/models/iris/infer", v2_body(ROW * 20, shape=(20, 4)), key=key)
    assert (reply.status, reply.code) == (413, "body_too_large")
    assert send("/v2/models/iris/infer", v2_body(ROW), key=key).status == 200


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_v2_infer_on_an_archived_or_not_ready_version_is_503(manage_client, ready_model, iris, key, path):
    old = ready_model(make_iris_model(zipmap=False), name="retired")
    manage_client.post("/api/v1/models", {"name": "retired", "version": "2.0.0"}, format="json")
    manage_client.post(f"/api/v1/models/{old['id']}/archive")
    send = SENDERS[path]
    for url, code in [
        ("/v2/models/retired/versions/1.0.0/infer", "model_archived"),
        ("/v2/models/retired/versions/2.0.0/infer", "model_not_ready"),
        ("/v2/models/retired/infer", "model_not_ready"),
    ]:
        reply = send(url, v2_body(ROW), key=key)
        assert (reply.status, reply.code) == (503, code), url
    assert send("/v2/models/iris/infer", v2_body(ROW), key=key).status == 200


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("0703-02-23T11:54:19.55-19:37", 200),  # an offset Python takes and PostgreSQL would not
        ("2026-01-01T00:00:00+23:59", 200),
        ("0001-01-01T00:00:00+01:00", 400),  # before year 1 in UTC
        ("not-a-date", 400),
    ],
)
def test_history_time_filters_take_any_offset_and_refuse_out_of_range(iris, client_for, value, status):
    """Found by the schemathesis run (tests/fuzz/): a 500 from PostgreSQL before the fix."""
    client = client_for("predict")
    response = client.get(f"/api/v1/models/{iris['id']}/predictions", {"created_after": value})
    assert response.status_code == status, response.content[:300]
    if status == 400:
        assert response.json()["code"] == "invalid_filter"
        assert "created_after" in response.json()["errors"]
    assert client.get(f"/api/v1/models/{iris['id']}/predictions").status_code == 200
