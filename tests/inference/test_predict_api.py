"""POST /api/v1/models/{id}/predict and /api/v1/models/by-name/{name}/predict as a client sees
them: outputs equal to ONNX Runtime's on the same bytes, and every bad request refused with its
status, its code and the offending input's name, after which good requests still work."""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import orjson
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from numpy.testing import assert_allclose, assert_array_equal
from rest_framework.test import APIClient

from registry.models import MLModel
from tests.inference.api import MODELS, named_predict_url, post_body, predict, predict_ok, predict_url
from tests.inference.factories import (
    SPECIES,
    float32,
    make_add_model,
    make_float8_input_model,
    make_float16_model,
    make_int64_model,
    make_iris_model,
    make_map_input_model,
    make_nan_imputer_model,
    make_scaled_model,
    make_sequence_input_model,
    make_string_model,
    reference_run,
)

pytestmark = pytest.mark.django_db

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.9, 2.4, 3.3, 1.0]]
RESPONSE_FIELDS = {
    "id",
    "model_id",
    "model_name",
    "model_version",
    "output_data",
    "inference_time_ms",
    "cached",
    "created_at",
}


# --- predictions ----------------------------------------------------------------------------------


def test_iris_with_zipmap_returns_labels_and_one_probability_map_per_row(ready_model, predict_client):
    data = make_iris_model(zipmap=True)
    model = ready_model(data, name="iris")

    response = predict(predict_client, model["id"], {"X": IRIS_ROWS})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["X-Cache"] == "MISS"
    timing = dict(part.split(";dur=") for part in response["Server-Timing"].split(", "))
    assert set(timing) == {"parse", "queue", "compute", "serialize"}
    assert all(float(value) >= 0 for value in timing.values())
    body = response.json()
    assert set(body) == RESPONSE_FIELDS
    assert uuid.UUID(body["id"])
    assert (body["model_id"], body["model_name"], body["model_version"]) == (model["id"], "iris", "1.0.0")
    assert body["cached"] is False
    assert body["inference_time_ms"] > 0
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None

    expected = reference_run(data, {"X": float32(IRIS_ROWS)})
    assert body["output_data"]["output_label"] == expected["output_label"].tolist()
    probabilities = body["output_data"]["output_probability"]
    assert len(probabilities) == len(IRIS_ROWS)
    for row, reference in zip(probabilities, expected["output_probability"], strict=True):
        # JSON object keys are strings: the integer class labels are rendered in decimal.
        assert list(row) == [str(label) for label in reference]
        assert_allclose([row[str(label)] for label in reference], list(reference.values()), rtol=1e-6)


def test_iris_without_zipmap_returns_a_probability_matrix(ready_model, predict_client):
    data = make_iris_model(zipmap=False)
    model = ready_model(data, name="iris")

    body = predict_ok(predict_client, model["id"], {"X": IRIS_ROWS})

    expected = reference_run(data, {"X": float32(IRIS_ROWS)})
    assert body["output_data"]["label"] == expected["label"].tolist()
    assert_allclose(body["output_data"]["probabilities"], expected["probabilities"], rtol=1e-6)
    assert "warnings" not in body


def test_int64_inputs_and_outputs_are_exact(ready_model, predict_client):
    data = make_int64_model()
    model = ready_model(data, name="ints")
    rows = [[1, 2], [-5, 2**40], [0, -(2**50)]]

    body = predict_ok(predict_client, model["id"], {"X": rows})

    expected = reference_run(data, {"X": np.array(rows, dtype=np.int64)})
    assert body["output_data"] == {"Y": expected["Y"].tolist(), "S": expected["S"].tolist()}
    assert body["output_data"]["Y"][1] == [-14, 3 * 2**40 + 1]


def test_string_inputs_and_outputs(ready_model, predict_client):
    data = make_string_model()
    model = ready_model(data, name="species")
    text = [*SPECIES, "rose", "héllo wörld ✓", ""]

    body = predict_ok(predict_client, model["id"], {"text": text})

    expected = reference_run(data, {"text": np.array(text, dtype=object)})
    assert body["output_data"] == {"label": expected["label"].tolist(), "echo": text}
    assert body["output_data"]["label"] == [0, 1, 2, -1, -1, -1]


def test_float16_output_matches_onnx_runtime_and_infinity_becomes_null_with_a_warning(ready_model, predict_client):
    data = make_float16_model()
    model = ready_model(data, name="half")
    rows = [[1.5, -2.25, 0.1], [65504.0, 1e-8, 3.0]]

    body = predict_ok(predict_client, model["id"], {"X": rows})

    expected = reference_run(data, {"X": float32(rows)})["Y"]
    assert expected.dtype == np.float16
    assert_array_equal(np.array(body["output_data"]["Y"], dtype=np.float16), expected)
    assert "warnings" not in body

    # 70000 fits float32 (the input) but not float16 (the output): ONNX Runtime gives infinity.
    body = predict_ok(predict_client, model["id"], {"X": [[1.0, 70000.0, -70000.0]]})
    assert body["output_data"]["Y"] == [[1.0, None, None]]
    assert body["warnings"] == ["output 'Y': 2 non-finite values rendered as null"]


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_dynamic_batch_dimension_gives_one_output_row_per_input_row(ready_model, predict_client, rows):
    data = make_add_model()
    model = ready_model(data, name="adder")
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = rng.normal(size=(rows, 3)).astype(np.float32)

    body = predict_ok(predict_client, model["id"], {"X": x.tolist(), "Y": y.tolist()})

    z = np.array(body["output_data"]["Z"], dtype=np.float32)
    assert z.shape == (rows, 3)
    assert_allclose(z, reference_run(data, {"X": x, "Y": y})["Z"], rtol=1e-6)


def test_by_name_predicts_with_the_latest_ready_version_or_the_one_asked_for(
    ready_model, predict_client, manage_client
):
    ready_model(make_scaled_model(2.0), name="scaler", version="1.9.0")
    latest = ready_model(make_scaled_model(3.0), name="scaler", version="1.10.0")
    manage_client.post(MODELS, {"name": "scaler", "version": "2.0.0"}, format="json")  # pending
    document = orjson.dumps({"input_data": {"X": [[1.0, 2.0, 3.0]]}})

    response = post_body(predict_client, named_predict_url("scaler"), document)
    assert response.status_code == 200
    body = response.json()
    # Semantic versions: 1.10.0 is above 1.9.0; the pending 2.0.0 is not served.
    assert (body["model_id"], body["model_version"]) == (latest["id"], "1.10.0")
    assert body["output_data"] == {"Y": [[3.0, 6.0, 9.0]]}

    response = post_body(predict_client, named_predict_url("scaler", "1.9.0"), document)
    assert response.status_code == 200
    assert response.json()["model_version"] == "1.9.0"
    assert response.json()["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}

    pending = post_body(predict_client, named_predict_url("scaler", "2.0.0"), document)
    assert pending.status_code == 409
    assert pending.json()["code"] == "model_not_ready"


def test_allow_non_finite_models_take_null_as_nan(ready_model, predict_client):
    strict = ready_model(make_nan_imputer_model(), name="imputer", version="1.0.0")
    lenient = ready_model(make_nan_imputer_model(), name="imputer", version="1.1.0")
    # Set in the database before the model's first request: servers keep model rows in
    # memory for a few seconds (SERVING_CACHE_SECONDS) and there is no API for the flag.
    MLModel.objects.filter(pk=lenient["id"]).update(allow_non_finite=True)
    rows = '{"input_data": {"X": [[1.5, null, 3], [null, null, -2]]}}'

    refused = post_body(predict_client, predict_url(strict["id"]), rows)
    assert refused.status_code == 400
    assert refused.json()["code"] == "non_finite_value"
    assert "'X'" in refused.json()["detail"]

    response = post_body(predict_client, predict_url(lenient["id"]), rows)
    assert response.status_code == 200, response.json()
    # The graph replaces NaN with -1: the nulls arrived as NaN.
    assert response.json()["output_data"] == {"Y": [[1.5, -1.0, 3.0], [-1.0, -1.0, -2.0]]}

    # NaN and infinity are still not JSON, and their spellings as strings are still refused.
    for bad in ("[[NaN, 1, 2]]", "[[1, 2, Infinity]]", '[["nan", 1, 2]]', '[[1, "-Infinity", 2]]', "[[1e400, 1, 2]]"):
        response = post_body(predict_client, predict_url(lenient["id"]), f'{{"input_data": {{"X": {bad}}}}}')
        assert response.status_code == 400, bad
        assert response.json()["code"] == "non_finite_value", bad
    hint = post_body(predict_client, predict_url(lenient["id"]), '{"input_data": {"X": [["nan", 1, 2]]}}')
    assert "Use null for a missing value" in hint.json()["detail"]


# --- bad requests ---------------------------------------------------------------------------------

MODELS_UNDER_TEST = {
    "iris": (make_iris_model, {"X": [[5.1, 3.5, 1.4, 0.2]]}),  # X: FP32 [-1, 4]
    "ints": (make_int64_model, {"X": [[1, 2]]}),  # X: INT64 [-1, 2]
    "text": (make_string_model, {"text": ["setosa"]}),  # text: BYTES [-1]
    "adder": (make_add_model, {"X": [[1, 2, 3]], "Y": [[4, 5, 6]]}),  # X, Y: FP32 [-1, 3]
}


def inputs(json_text: str) -> str:
    return f'{{"input_data": {json_text}}}'


# Per model: (body, code, the input the detail names, text the detail contains). All are 400s.
BAD_INPUTS = {
    "adder": [
        (inputs('{"X": [[1, 2, 3]]}'), "missing_input", "Y", "needs 'X', 'Y'"),
        (inputs('{"Y": [[1, 2, 3]], "X": [[1, 2, 3]], "W": [[1, 2, 3]]}'), "unknown_input", "W", "accepts 'X', 'Y'"),
    ],
    "iris": [
        # names
        (inputs('{"X": [[5.1, 3.5, 1.4, 0.2]], "Z": [[1]]}'), "unknown_input", "Z", "accepts 'X'"),
        (inputs('{"x": [[5.1, 3.5, 1.4, 0.2]]}'), "unknown_input", "x", "accepts 'X'"),
        (inputs("{}"), "missing_input", "X", "needs 'X'"),
        # element types
        (inputs('{"X": [["5.1", 3.5, 1.4, 0.2]]}'), "invalid_dtype", "X", "strings"),
        (inputs('{"X": [[true, 3.5, 1.4, 0.2]]}'), "invalid_dtype", "X", "true/false"),
        (inputs('{"X": [[1, 0, 1, false]]}'), "invalid_dtype", "X", "true/false"),
        (inputs('{"X": {"a": 1}}'), "invalid_input", "X", "JSON object"),
        (inputs('{"X": [[1e39, 3.5, 1.4, 0.2]]}'), "value_out_of_range", "X", "FP32"),
        # rank and fixed dimensions
        (inputs('{"X": [5.1, 3.5, 1.4, 0.2]}'), "invalid_shape", "X", "wrap it in a list"),
        (inputs('{"X": 5.1}'), "invalid_shape", "X", "rank 2"),
        (inputs('{"X": [[[5.1, 3.5, 1.4, 0.2]]]}'), "invalid_shape", "X", "rank 2"),
        (inputs('{"X": [[5.1, 3.5, 1.4]]}'), "invalid_shape", "X", "dimension 1 must be 4"),
        (inputs('{"X": [[5.1, 3.5, 1.4, 0.2, 9.9]]}'), "invalid_shape", "X", "dimension 1 must be 4"),
        (inputs('{"X": []}'), "invalid_shape", "X", "rank 2"),
        # ragged arrays
        (inputs('{"X": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3]]}'), "ragged_array", "X", "ragged"),
        (inputs('{"X": [[5.1, 3.5, 1.4, 0.2], 5]}'), "ragged_array", "X", "ragged"),
        # non-finite values spelled as strings, and null where NaN is not allowed
        (inputs('{"X": [["nan", 3.5, 1.4, 0.2]]}'), "non_finite_value", "X", "'nan'"),
        (inputs('{"X": [["NaN", 3.5, 1.4, 0.2]]}'), "non_finite_value", "X", "'NaN'"),
        (inputs('{"X": [["1e400", 3.5, 1.4, 0.2]]}'), "non_finite_value", "X", "'1e400'"),
        (inputs('{"X": [[1, "-Infinity", 1.4, 0.2]]}'), "non_finite_value", "X", "'-Infinity'"),
        (inputs('{"X": [[null, 3.5, 1.4, 0.2]]}'), "non_finite_value", "X", "null"),
    ],
    "ints": [
        (inputs('{"X": [[3.5, 1]]}'), "invalid_dtype", "X", "3.5"),
        (inputs('{"X": [[true, 1]]}'), "invalid_dtype", "X", "true/false"),
        (inputs('{"X": [[null, 1]]}'), "invalid_dtype", "X", "null"),
        (inputs('{"X": [["3", 1]]}'), "invalid_dtype", "X", "strings"),
        (inputs('{"X": [["inf", 1]]}'), "non_finite_value", "X", "'inf'"),
        (inputs('{"X": [[1, 2], [3, [4]]]}'), "ragged_array", "X", "ragged"),
        (inputs('{"X": [[1, 2, 3]]}'), "invalid_shape", "X", "dimension 1 must be 2"),
        # integers beyond INT64, above and below
        (inputs('{"X": [[9223372036854775808, 1]]}'), "integer_overflow", "X", "9223372036854775807"),
        (inputs('{"X": [[18446744073709551616, 1]]}'), "integer_overflow", "X", "9223372036854775807"),
        (inputs('{"X": [[1, -9223372036854775809]]}'), "integer_overflow", "X", "-9223372036854775808"),
        (inputs('{"X": [[1, -18446744073709551616]]}'), "integer_overflow", "X", "-9223372036854775808"),
    ],
    "text": [
        (inputs('{"text": [1, "setosa"]}'), "invalid_dtype", "text", "integers"),
        (inputs('{"text": [null]}'), "invalid_dtype", "text", "null"),
        (inputs('{"text": [true]}'), "invalid_dtype", "text", "true/false"),
        (inputs('{"text": [["setosa"]]}'), "invalid_shape", "text", "rank 1"),
        (inputs('{"text": ["a", ["b"]]}'), "ragged_array", "text", "ragged"),
    ],
}

# Refused while parsing the body, before any input is looked at: no input to name. Sent to iris.
BAD_BODIES = [
    (inputs('{"X": [[NaN, 3.5, 1.4, 0.2]]}'), "non_finite_value", "NaN or Infinity literal"),
    (inputs('{"X": [[Infinity, 3.5, 1.4, 0.2]]}'), "non_finite_value", "NaN or Infinity literal"),
    (inputs('{"X": [[-Infinity, 3.5, 1.4, 0.2]]}'), "non_finite_value", "NaN or Infinity literal"),
    (inputs('{"X": [[1e400, 3.5, 1.4, 0.2]]}'), "non_finite_value", "too large for a 64-bit float"),
    (inputs('{"X": [[-1e400, 3.5, 1.4, 0.2]]}'), "non_finite_value", "too large for a 64-bit float"),
    ('{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}', "parse_error", "not valid JSON"),
    ("{not json", "parse_error", "not valid JSON"),
    ("", "parse_error", "empty"),
    (b'{"input_data": {"X": "\xff\xfe"}}', "parse_error", "not valid JSON"),
    ("[1, 2]", "invalid_input", "must be a JSON object"),
    ('"input_data"', "invalid_input", "must be a JSON object"),
    ("null", "invalid_input", "must be a JSON object"),
    ('{"input_data": [[5.1, 3.5, 1.4, 0.2]]}', "invalid_input", "received an array"),
    ('{"skip_cache": false}', "missing_field", "input_data is required"),
    ('{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "inputs": []}', "unknown_field", "'inputs'"),
    ('{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": "yes"}', "invalid_field", "skip_cache"),
    ('{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": 1}', "invalid_field", "skip_cache"),
    ('{"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": null}', "invalid_field", "skip_cache"),
    (inputs('{"X": ' + "[" * 40 + "1" + "]" * 40 + "}"), "nesting_too_deep", "32 levels"),
]


@pytest.fixture
def model_under_test(ready_model):
    def _model(key: str) -> tuple[dict, dict]:
        factory, good = MODELS_UNDER_TEST[key]
        return ready_model(factory(), name=key), good

    return _model


def assert_still_serves(client: APIClient, model: dict, good_inputs: dict) -> None:
    response = predict(client, model["id"], good_inputs)
    assert response.status_code == 200, response.json()


def refusal_mismatch(response, code: str, *texts: str) -> str | None:
    """Why a response is not the expected 400 {"code", "detail"}, or None if it is."""
    if response.status_code != 400 or response["Content-Type"] != "application/json":
        return f"status {response.status_code}: {response.content[:300]!r}"
    error = response.json()
    if set(error) != {"code", "detail"} or error["code"] != code:
        return f"expected {code}, got {error}"
    missing = [text for text in texts if text not in error["detail"]]
    return f"detail lacks {missing}: {error['detail']}" if missing else None


# One registration per model, many requests: registering runs the validation sandbox (~1 s).
@pytest.mark.parametrize("model_key", sorted(BAD_INPUTS))
def test_bad_inputs_are_400_with_their_code_naming_the_input(model_under_test, predict_client, model_key):
    model, good = model_under_test(model_key)
    failures = []
    for body, code, input_name, hint in BAD_INPUTS[model_key]:
        response = post_body(predict_client, predict_url(model["id"]), body)
        mismatch = refusal_mismatch(response, code, f"'{input_name}'", hint)
        if mismatch:
            failures.append(f"{body}\n    -> {mismatch}")
        assert_still_serves(predict_client, model, good)
    assert not failures, "\n".join(failures)


def test_bad_bodies_are_400_with_their_code(model_under_test, predict_client):
    model, good = model_under_test("iris")
    failures = []
    for body, code, hint in BAD_BODIES:
        response = post_body(predict_client, predict_url(model["id"]), body)
        mismatch = refusal_mismatch(response, code, hint)
        if mismatch:
            failures.append(f"{body!r}\n    -> {mismatch}")
        assert_still_serves(predict_client, model, good)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("factory", "input_name", "value", "onnx_type"),
    [
        (make_sequence_input_model, "parts", [[1.0, 2.0], [3.0]], "seq(tensor(float))"),
        (make_map_input_model, "features", [["a", 1.0]], "map(string,tensor(float))"),
        (make_float8_input_model, "x", [1.0, 2.0], "tensor(float8e4m3fn)"),
    ],
)
def test_inputs_json_cannot_carry_are_400_unsupported_input_type(
    ready_model, predict_client, factory, input_name, value, onnx_type
):
    model = ready_model(factory(), name="exotic")

    response = predict(predict_client, model["id"], {input_name: value})

    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_input_type"
    assert f"'{input_name}'" in response.json()["detail"]
    assert onnx_type in response.json()["detail"]


def test_literal_errors_say_where_in_the_body(model_under_test, predict_client):
    model, _ = model_under_test("iris")
    body = '{"input_data": {"X": [[1, NaN, 3, 4]]}}'
    response = post_body(predict_client, predict_url(model["id"]), body)
    assert f"(line 1 column {body.index('NaN') + 1})" in response.json()["detail"]


def test_more_elements_than_allowed_across_all_inputs_is_400(model_under_test, predict_client, settings):
    settings.MAX_INPUT_ELEMENTS = 10
    model, good = model_under_test("adder")
    three_rows = [[1, 2, 3]] * 3  # 9 elements each: X fits, X and Y together do not

    response = predict(predict_client, model["id"], {"X": three_rows, "Y": three_rows})

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_elements"
    assert "'Y'" in response.json()["detail"]
    assert "10 allowed" in response.json()["detail"]
    iris, _ = model_under_test("iris")
    response = predict(predict_client, iris["id"], {"X": [[5.1, 3.5, 1.4, 0.2]] * 3})
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_elements"
    assert "'X'" in response.json()["detail"]
    assert_still_serves(predict_client, model, good)


def test_nesting_deeper_than_the_configured_depth_is_400(model_under_test, predict_client, settings):
    model, good = model_under_test("iris")
    settings.MAX_JSON_DEPTH = 3  # {"input_data": {"X": [[...]]}} nests 4 deep

    response = predict(predict_client, model["id"], good)

    assert response.status_code == 400
    assert response.json()["code"] == "nesting_too_deep"
    settings.MAX_JSON_DEPTH = 4
    assert_still_serves(predict_client, model, good)


def test_body_over_the_size_limit_is_a_json_413(model_under_test, predict_client, settings):
    model, good = model_under_test("iris")
    settings.MAX_REQUEST_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    rows = [[5.1, 3.5, 1.4, 0.2]] * 200  # about 4 KB of JSON

    response = predict(predict_client, model["id"], {"X": rows})

    assert response.status_code == 413, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "body_too_large"
    assert "2000" in response.json()["detail"]
    assert_still_serves(predict_client, model, good)


# --- model states, names and keys -------------------------------------------------------------------


def test_pending_model_is_409_model_not_ready(manage_client, predict_client):
    model = manage_client.post(MODELS, {"name": "later", "version": "1.0.0"}, format="json").json()
    response = predict(predict_client, model["id"], {"X": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 409
    assert response.json()["code"] == "model_not_ready"
    assert "pending" in response.json()["detail"]


def test_uploaded_but_not_validated_model_is_409_model_not_ready(manage_client, predict_client):
    model = manage_client.post(MODELS, {"name": "later", "version": "1.0.0"}, format="json").json()
    upload = SimpleUploadedFile("m.onnx", make_add_model(), content_type="application/octet-stream")
    assert manage_client.post(f"{MODELS}/{model['id']}/upload", {"file": upload}, format="multipart").status_code == 200
    response = predict(predict_client, model["id"], {"X": [[1.0, 2.0, 3.0]], "Y": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 409
    assert response.json()["code"] == "model_not_ready"


def test_model_in_error_is_409_model_not_ready_naming_the_error(register, predict_client):
    model = register(b"not an onnx model", name="broken")
    assert model["status"] == "error"

    response = predict(predict_client, model["id"], {"X": [[1.0]]})

    assert response.status_code == 409
    assert response.json()["code"] == "model_not_ready"
    assert "invalid_model" in response.json()["detail"]


def test_archived_model_is_409_model_archived(ready_model, predict_client, manage_client):
    model = ready_model(make_add_model(), name="old")
    good = {"X": [[1, 2, 3]], "Y": [[4, 5, 6]]}
    assert predict(predict_client, model["id"], good).status_code == 200
    assert manage_client.post(f"{MODELS}/{model['id']}/archive").json()["status"] == "archived"

    response = predict(predict_client, model["id"], good)
    assert response.status_code == 409
    assert response.json()["code"] == "model_archived"

    by_version = post_body(predict_client, named_predict_url("old", "1.0.0"), orjson.dumps({"input_data": good}))
    assert by_version.status_code == 409
    assert by_version.json()["code"] == "model_archived"
    latest = post_body(predict_client, named_predict_url("old"), orjson.dumps({"input_data": good}))
    assert latest.status_code == 404
    assert latest.json()["code"] == "model_not_found"


def test_unknown_model_id_name_or_version_is_404(ready_model, predict_client):
    ready_model(make_add_model(), name="adder")
    good = orjson.dumps({"input_data": {"X": [[1, 2, 3]], "Y": [[4, 5, 6]]}})
    for url in (
        predict_url(uuid.uuid4()),
        named_predict_url("nobody"),
        named_predict_url("adder", "9.9.9"),
        named_predict_url("nobody", "1.0.0"),
    ):
        response = post_body(predict_client, url, good)
        assert response.status_code == 404, url
        assert response.json()["code"] == "model_not_found", url
    garbage = post_body(predict_client, f"{MODELS}/not-a-uuid/predict", good)
    assert garbage.status_code == 404
    assert garbage.json()["code"] == "not_found"
    assert post_body(predict_client, named_predict_url("adder"), good).status_code == 200


def test_predict_needs_a_key_with_the_predict_scope(ready_model, client_for, api_client, make_key, predict_client):
    model = ready_model(make_add_model(), name="adder")
    good = {"X": [[1, 2, 3]], "Y": [[4, 5, 6]]}

    no_key = predict(api_client, model["id"], good)
    assert no_key.status_code == 401
    assert no_key.json()["code"] == "not_authenticated"

    for scopes in (("read",), ("read", "manage")):
        response = predict(client_for(*scopes), model["id"], good)
        assert response.status_code == 403, scopes
        assert response.json()["code"] == "missing_scope"
        assert "'predict'" in response.json()["detail"]

    _, revoked = make_key("predict", revoked=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {revoked}")
    response = predict(client, model["id"], good)
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_revoked"

    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer abc.def")
    assert predict(wrong, model["id"], good).status_code == 401

    # Errors are answered before the body is read: a bad body changes nothing.
    assert post_body(api_client, predict_url(model["id"]), "{not json").status_code == 401
    assert predict(predict_client, model["id"], good).status_code == 200


def test_get_is_not_allowed_on_predict(ready_model, predict_client):
    model = ready_model(make_add_model(), name="adder")
    assert predict_client.get(predict_url(model["id"])).status_code == 405
