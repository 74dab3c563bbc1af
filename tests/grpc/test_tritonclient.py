"""gRPC conformance with the real Triton client (tritonclient.grpc from PyPI, unmodified) against
`manage.py serve_grpc`: every model of the /v2 conformance tests, the onnx package's test-data
models included, answers over gRPC exactly what it answers over REST (tritonclient.http against
granian, on the same database) for the same input, sent plainly, with async_infer, or gzip
compressed.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from django.conf import settings
from tritonclient.utils import np_to_triton_dtype

from tests.v2.models import ATOL, RTOL, backend_cases

pytestmark = pytest.mark.e2e

MODES = pytest.mark.parametrize("mode", ["sync", "async", "gzip"])


def call(client: grpcclient.InferenceServerClient, mode: str, model: str, inputs, **kwargs) -> grpcclient.InferResult:
    """One infer by `mode`: infer, async_infer (its callback), or infer with gzip compression."""
    if mode == "sync":
        return client.infer(model, inputs, **kwargs)
    if mode == "gzip":
        return client.infer(model, inputs, compression_algorithm="gzip", **kwargs)
    results = []
    done = __import__("threading").Event()

    def callback(result, error):
        results.append((result, error))
        done.set()

    client.async_infer(model, inputs, callback, **kwargs)
    assert done.wait(30)
    result, error = results[0]
    if error is not None:
        raise error
    return result


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        infer_input = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def rest_inputs(arrays: dict[str, np.ndarray]) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in arrays.items():
        infer_input = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        infer_input.set_data_from_numpy(array, binary_data=True)
        inputs.append(infer_input)
    return inputs


def as_comparable(array: np.ndarray) -> np.ndarray:
    if array.dtype == object:
        return np.array([item.decode() if isinstance(item, bytes) else item for item in array.reshape(-1)]).reshape(
            array.shape
        )
    return array


def assert_same_outputs(grpc_result, rest_result, names) -> None:
    for name in names:
        over_grpc, over_rest = grpc_result.as_numpy(name), rest_result.as_numpy(name)
        assert over_grpc is not None, name
        assert over_grpc.dtype == over_rest.dtype, name
        assert over_grpc.shape == over_rest.shape, name
        np.testing.assert_array_equal(as_comparable(over_grpc), as_comparable(over_rest), err_msg=name)


# --- health and metadata ------------------------------------------------------------------------


def test_probes_and_server_metadata_need_no_key(grpc_for):
    client = grpc_for(None)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata(as_json=True) == {
        "name": "modelforge",
        "version": settings.MODELFORGE_VERSION,
        "extensions": ["binary_tensor_data", "model_repository"],
    }


@pytest.mark.parametrize("model", ["iris", "iris-zipmap", "strings", "two-inputs"])
def test_model_metadata_is_the_rest_metadata(triton_grpc, triton_rest, model):
    over_grpc = triton_grpc.get_model_metadata(model, as_json=True)
    # protobuf's JSON writes int64 as strings: the shapes are compared as numbers.
    for tensor in over_grpc["inputs"] + over_grpc["outputs"]:
        tensor["shape"] = [int(dim) for dim in tensor.get("shape", [])]  # and leaves out an empty one
    assert over_grpc == triton_rest.get_model_metadata(model)


def test_model_ready(triton_grpc):
    assert triton_grpc.is_model_ready("iris")
    assert triton_grpc.is_model_ready("iris", "1.0.0")
    assert not triton_grpc.is_model_ready("iris", "9.9.9")
    assert not triton_grpc.is_model_ready("no-such-model")


def test_model_config_in_triton_shape(triton_grpc):
    config = triton_grpc.get_model_config("iris", as_json=True)["config"]
    assert (config["name"], config["platform"]) == ("iris", "onnxruntime_onnx")
    assert [(tensor["name"], tensor["data_type"]) for tensor in config["input"]] == [("X", "TYPE_FP32")]
    assert [tensor["name"] for tensor in config["output"]] == ["label", "probabilities"]


# --- infer: the same answers as REST -----------------------------------------------------------------

CASES = {
    "scaled": {"X": np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, 7.0]], dtype=np.float32)},
    "iris": {"X": np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)},
    "ints": {"X": np.array([[1, -2], [2**40, -(2**40)], [0, 7]], dtype=np.int64)},
    "bools": {
        "A": np.array([[True, False, True], [False, False, True]]),
        "B": np.array([[True, True, False], [False, True, True]]),
    },
    "strings": {"text": np.array(["setosa", "virginica", "", "été ☀", "unknown"], dtype=object)},
    "halves": {"X": np.array([[0.1, 65504.0, -3.5]], dtype=np.float32)},
    "two-inputs": {"X": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), "K": np.array([5, 6], dtype=np.int64)},
}


@MODES
@pytest.mark.parametrize("model", list(CASES))
def test_infer_answers_as_rest_does(triton_grpc, triton_rest, model, mode):
    arrays = CASES[model]
    over_grpc = call(triton_grpc, mode, model, grpc_inputs(arrays))
    over_rest = triton_rest.infer(model, rest_inputs(arrays))
    names = [output["name"] for output in over_rest.get_response()["outputs"]]
    assert [output.name for output in over_grpc.get_response().outputs] == names
    assert_same_outputs(over_grpc, over_rest, names)
    response = over_grpc.get_response()
    assert (response.model_name, response.model_version) == (model, "1.0.0")


def test_a_requested_subset_of_outputs_with_an_id_and_parameters(triton_grpc):
    x = CASES["iris"]["X"]
    result = triton_grpc.infer(
        "iris",
        grpc_inputs({"X": x}),
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        request_id="req-7",
        parameters={"skip_cache": True, "tag": "a"},
    )
    response = result.get_response()
    assert response.id == "req-7"
    assert [output.name for output in response.outputs] == ["probabilities"]
    assert result.as_numpy("label") is None
    assert result.as_numpy("probabilities").shape == (2, 3)


def test_a_cached_answer_is_the_same_values(triton_grpc):
    x = np.array([[0.1, 1e-7, 3.0e37]], dtype=np.float32)  # a repeat is answered from the cache
    first = triton_grpc.infer("scaled", grpc_inputs({"X": x}))
    again = triton_grpc.infer("scaled", grpc_inputs({"X": x}))
    np.testing.assert_array_equal(first.as_numpy("Y"), again.as_numpy("Y"))
    np.testing.assert_array_equal(again.as_numpy("Y"), x * np.float32(2))


@pytest.mark.parametrize("case", backend_cases(), ids=lambda case: case.name)
def test_backend_model_answers_as_rest_does(triton_grpc, triton_rest, case):
    parameters = {"skip_cache": True}
    over_grpc = triton_grpc.infer(case.name, grpc_inputs(case.inputs), parameters=parameters)
    over_rest = triton_rest.infer(case.name, rest_inputs(case.inputs), parameters=parameters)
    assert_same_outputs(over_grpc, over_rest, list(case.outputs))
    for name, expected in case.outputs.items():
        if expected.dtype != object:
            np.testing.assert_allclose(over_grpc.as_numpy(name), expected, rtol=RTOL, atol=ATOL, err_msg=name)


# --- the repository extension ---------------------------------------------------------------------


def test_repository_index_load_and_unload_need_the_manage_scope(grpc_for):
    manager, predictor = grpc_for("manage"), grpc_for("predict")
    index = manager.get_model_repository_index(as_json=True)["models"]
    assert {"name": "iris", "version": "1.0.0", "state": "READY"} in index  # protobuf's JSON drops empty strings
    manager.load_model("iris")
    manager.unload_model("iris")
    with pytest.raises(grpcclient.InferenceServerException) as missing:
        manager.load_model("no-such-model")
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    assert missing.value.message() == "Unknown model 'no-such-model'."
    with pytest.raises(grpcclient.InferenceServerException) as forbidden:
        predictor.get_model_repository_index()
    assert forbidden.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "lacks the 'manage' scope" in forbidden.value.message()
