"""/v2 conformance with the real Triton client (tritonclient.http from PyPI, unmodified) against
a real server process: granian serving the WSGI app with its fast path, as in production.

Expected outputs come from ONNX Runtime run directly on the same model bytes, never from
numbers written here.
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.conf import settings
from tritonclient.utils import InferenceServerException

from tests.inference.factories import (
    make_float16_model,
    make_int64_model,
    make_iris_model,
    make_scaled_model,
    make_string_model,
    reference_run,
)
from tests.v2 import live_server
from tests.v2.models import make_bool_model, make_two_input_model

pytestmark = pytest.mark.e2e

ENCODINGS = pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])


def tensor(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> httpclient.InferInput:
    infer_input = httpclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def wanted(*names: str, binary: bool = True) -> list[httpclient.InferRequestedOutput]:
    return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in names]


def texts(array: np.ndarray) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else item for item in array.reshape(-1)]


# --- health and metadata ------------------------------------------------------------------------


def test_probes_and_server_metadata_need_no_key(triton_for):
    client = triton_for(None)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "modelforge",
        "version": settings.MODELFORGE_VERSION,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


def test_model_metadata_shows_datatypes_variable_dims_and_ready_versions(triton):
    expected = {
        "name": "iris",
        "versions": ["1.0.0"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    assert triton.get_model_metadata("iris") == expected
    assert triton.get_model_metadata("iris", "1.0.0") == expected
    # A sequence-of-maps output (ZipMap) cannot travel over v2, so it is not listed.
    zipmap = triton.get_model_metadata("iris-zipmap")
    assert [output["name"] for output in zipmap["outputs"]] == ["output_label"]


def test_model_ready(triton):
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "1.0.0")
    assert not triton.is_model_ready("iris", "9.9.9")
    assert not triton.is_model_ready("no-such-model")


def test_model_routes_need_a_key_with_the_predict_scope(triton_for):
    anonymous, reader = triton_for(None), triton_for("read")
    assert not anonymous.is_model_ready("iris")
    with pytest.raises(InferenceServerException) as no_key:
        anonymous.get_model_metadata("iris")
    assert no_key.value.status() == "401"
    assert "Authorization: Bearer" in no_key.value.message()
    with pytest.raises(InferenceServerException) as wrong_scope:
        reader.infer("scaled", [tensor("X", np.zeros((1, 3), np.float32), "FP32")])
    assert wrong_scope.value.status() == "403"
    assert "lacks the 'predict' scope" in wrong_scope.value.message()


def test_unknown_model_and_version_are_404_with_a_readable_message(triton):
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404"
    assert unknown.value.message() == "Unknown model 'no-such-model'."
    with pytest.raises(InferenceServerException) as version:
        triton.infer("scaled", [tensor("X", np.zeros((1, 3), np.float32), "FP32")], model_version="9.9.9")
    assert version.value.status() == "404"
    assert "no version '9.9.9'" in version.value.message()


# --- infer ---------------------------------------------------------------------------------------


@ENCODINGS
def test_infer_fp32(triton, binary):
    x = np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, 7.0]], dtype=np.float32)
    result = triton.infer(
        "scaled", [tensor("X", x, "FP32", binary=binary)], outputs=wanted("Y", binary=binary), request_id="req-7"
    )
    np.testing.assert_array_equal(result.as_numpy("Y"), reference_run(make_scaled_model(2.0), {"X": x})["Y"])
    assert result.as_numpy("Y").dtype == np.float32
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("scaled", "1.0.0", "req-7")
    output = response["outputs"][0]
    assert ("parameters" in output) is binary
    assert ("data" in output) is not binary


@ENCODINGS
def test_infer_int64(triton, binary):
    x = np.array([[1, -2], [2**40, -(2**40)], [0, 7]], dtype=np.int64)
    result = triton.infer("ints", [tensor("X", x, "INT64", binary=binary)], outputs=wanted("Y", "S", binary=binary))
    expected = reference_run(make_int64_model(), {"X": x})
    for name in ("Y", "S"):
        assert result.as_numpy(name).dtype == np.int64
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


@ENCODINGS
def test_infer_bool(triton, binary):
    a = np.array([[True, False, True], [False, False, True]])
    b = np.array([[True, True, False], [False, True, True]])
    result = triton.infer(
        "bools",
        [tensor("A", a, "BOOL", binary=binary), tensor("B", b, "BOOL", binary=binary)],
        outputs=wanted("both", "neither", binary=binary),
    )
    expected = reference_run(make_bool_model(), {"A": a, "B": b})
    for name in ("both", "neither"):
        assert result.as_numpy(name).dtype == np.bool_
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


@ENCODINGS
def test_infer_bytes(triton, binary):
    text = np.array(["setosa", "virginica", "", "été ☀", "unknown"], dtype=object)
    result = triton.infer(
        "strings", [tensor("text", text, "BYTES", binary=binary)], outputs=wanted("label", "echo", binary=binary)
    )
    expected = reference_run(make_string_model(), {"text": text})
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    assert texts(result.as_numpy("echo")) == list(expected["echo"])


@ENCODINGS
def test_infer_fp16_output(triton, binary):
    x = np.array([[0.1, 65504.0, -3.5]], dtype=np.float32)
    result = triton.infer("halves", [tensor("X", x, "FP32", binary=binary)], outputs=wanted("Y", binary=binary))
    assert result.as_numpy("Y").dtype == np.float16
    np.testing.assert_array_equal(result.as_numpy("Y"), reference_run(make_float16_model(), {"X": x})["Y"])


def test_default_settings_send_binary_and_get_every_output_in_binary(triton):
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    result = triton.infer("iris", [tensor("X", x, "FP32")])
    expected = reference_run(make_iris_model(zipmap=False), {"X": x})
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == ["label", "probabilities"]
    assert all("binary_data_size" in output["parameters"] for output in outputs)
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])


@ENCODINGS
def test_a_requested_subset_of_outputs(triton, binary):
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    result = triton.infer(
        "iris", [tensor("X", x, "FP32", binary=binary)], outputs=wanted("probabilities", binary=binary)
    )
    assert [output["name"] for output in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("label") is None
    expected = reference_run(make_iris_model(zipmap=False), {"X": x})["probabilities"]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)


def test_each_output_chooses_its_encoding(triton):
    x = np.array([[1, 2]], dtype=np.int64)
    result = triton.infer("ints", [tensor("X", x, "INT64")], outputs=[*wanted("Y"), *wanted("S", binary=False)])
    y, s = result.get_response()["outputs"]
    assert "binary_data_size" in y["parameters"]
    assert s["data"] == [3]


def test_binary_and_json_inputs_in_one_request(triton):
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    k = np.array([5, 6], dtype=np.int64)
    result = triton.infer("two-inputs", [tensor("X", x, "FP32"), tensor("K", k, "INT64", binary=False)])
    expected = reference_run(make_two_input_model(), {"X": x, "K": k})
    np.testing.assert_array_equal(result.as_numpy("Y"), expected["Y"])
    assert result.as_numpy("total").shape == ()
    assert result.as_numpy("total") == expected["total"]


@ENCODINGS
@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(triton, algorithm, binary):
    x = np.arange(300, dtype=np.float32).reshape(100, 3)
    result = triton.infer(
        "scaled",
        [tensor("X", x, "FP32", binary=binary)],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,  # answered uncompressed, which the client accepts
    )
    np.testing.assert_array_equal(result.as_numpy("Y"), x * 2)


def test_request_parameters_are_accepted(triton):
    x = np.ones((1, 3), dtype=np.float32)
    result = triton.infer(
        "scaled", [tensor("X", x, "FP32")], priority=1, timeout=1_000_000, parameters={"skip_cache": True, "tag": "a"}
    )
    np.testing.assert_array_equal(result.as_numpy("Y"), x * 2)


def test_a_model_without_a_version_uses_the_latest_ready_one(triton):
    result = triton.infer("scaled", [tensor("X", np.ones((1, 3), np.float32), "FP32")])
    assert result.get_response()["model_version"] == "1.0.0"


# --- client mistakes ---------------------------------------------------------------------------


def test_wrong_shape_is_a_400_naming_the_expected_shape(triton):
    with pytest.raises(InferenceServerException) as error:
        triton.infer("iris", [tensor("X", np.zeros((1, 5), np.float32), "FP32")])
    assert error.value.status() == "400"
    assert error.value.message() == "Input 'X' expects shape [-1, 4] (-1 = any size); the request declares [1, 5]."


def test_wrong_datatype_is_a_400_naming_the_right_one(triton):
    with pytest.raises(InferenceServerException) as error:
        triton.infer("iris", [tensor("X", np.zeros((1, 4), np.float64), "FP64")])
    assert error.value.status() == "400"
    assert error.value.message() == (
        "Input 'X' is FP32; the request declares FP64. Send FP32 data (numpy float32): datatypes are not converted."
    )


def test_unknown_input_and_output_names_are_400(triton):
    with pytest.raises(InferenceServerException) as unknown_input:
        triton.infer("iris", [tensor("x", np.zeros((1, 4), np.float32), "FP32")])
    assert unknown_input.value.status() == "400"
    assert unknown_input.value.message() == "Unknown input 'x'. This model's inputs: 'X'."
    with pytest.raises(InferenceServerException) as unknown_output:
        triton.infer("iris", [tensor("X", np.zeros((1, 4), np.float32), "FP32")], outputs=wanted("probability"))
    assert "Unknown output 'probability'" in unknown_output.value.message()


def test_non_finite_inputs_are_400(triton):
    x = np.array([[1.0, np.nan, 2.0]], dtype=np.float32)
    with pytest.raises(InferenceServerException) as error:
        triton.infer("scaled", [tensor("X", x, "FP32")])
    assert error.value.status() == "400"
    assert "NaN or infinity (at index [0, 1])" in error.value.message()


# --- the repository extension ---------------------------------------------------------------------


def test_repository_index_load_and_unload_need_the_manage_scope(triton_for):
    manager, predictor = triton_for("manage"), triton_for("predict")
    index = manager.get_model_repository_index()
    assert {"name": "iris", "version": "1.0.0", "state": "READY", "reason": ""} in index
    manager.load_model("iris")
    manager.unload_model("iris")
    with pytest.raises(InferenceServerException) as missing:
        manager.load_model("no-such-model")
    assert missing.value.status() == "404"
    with pytest.raises(InferenceServerException) as forbidden:
        predictor.get_model_repository_index()
    assert forbidden.value.status() == "403"


# --- without tritonclient ------------------------------------------------------------------------


def post(v2_server, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    # Our own loopback server over http: no other scheme can reach these calls.
    request = urllib.request.Request(f"{v2_server.base}{path}", data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_raw_binary_body_for_a_single_input_model(v2_server):
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    key = {"Authorization": f"Bearer {v2_server.keys['predict']}"}
    status, _, body = post(
        v2_server, "/v2/models/iris/infer", x.tobytes(), {**key, "Inference-Header-Content-Length": "0"}
    )
    assert status == 200
    outputs = {output["name"]: output for output in json.loads(body)["outputs"]}
    expected = reference_run(make_iris_model(zipmap=False), {"X": x})
    assert outputs["label"]["shape"] == [2]
    assert outputs["label"]["data"] == expected["label"].tolist()


def test_a_gzip_bomb_is_refused_with_413(v2_server):
    bomb = gzip.compress(b"{" + b" " * (live_server.MAX_BODY_BYTES * 4) + b"}")
    key = {"Authorization": f"Bearer {v2_server.keys['predict']}", "Content-Encoding": "gzip"}
    status, _, body = post(v2_server, "/v2/models/iris/infer", bomb, key)
    assert status == 413
    assert json.loads(body)["code"] == "body_too_large"
    # The server is still serving.
    status, _, _ = post(v2_server, "/v2/models/iris/infer", b'{"inputs": []}', key | {"Content-Encoding": "identity"})
    assert status == 400
