"""The ONNX project's own test models, served through the API.

For every model in the onnx package's `backend/test/data/pytorch-converted` and `simple`
folders: register it through the API; when it ends ready, POST each recorded input set and
compare the answer with the recorded outputs. The only cases skipped are those the API rejects
with `runtime_load_failed` and that ONNX Runtime itself, asked directly, cannot load either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.testing import assert_allclose
from onnx import numpy_helper

from tests.inference.api import predict

pytestmark = pytest.mark.django_db

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = [case for folder in ("pytorch-converted", "simple") for case in sorted((DATA / folder).glob("*/model.onnx"))]

# The largest recorded input (MaxPool2d_stride_padding_dilation, 1x1x1000x1000 float32) is
# about 10.6 MB as JSON, over the 10 MB default body limit; its million elements are exactly
# MAX_INPUT_ELEMENTS. A server meant for such inputs raises the body limit; so do these tests.
BODY_LIMIT = 32 * 1024 * 1024


def read_value(path: Path, type_proto: onnx.TypeProto):
    """A recorded input or output: a numpy array, or a list of them for a sequence."""
    if type_proto.HasField("sequence_type"):
        sequence = onnx.SequenceProto()
        sequence.ParseFromString(path.read_bytes())
        return numpy_helper.to_list(sequence)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def as_json(value):
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value.tolist()


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: IR < 4 models also list their initializers as inputs."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def onnx_runtime_load_error(data: bytes) -> str | None:
    try:
        ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's pybind errors derive from Exception only
        return str(exc)
    return None


def assert_same_value(actual, expected, where: str) -> None:
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(got, want, f"{where}[{index}]")
        return
    if expected.dtype == object or expected.dtype.kind in "SU":
        assert np.array(actual, dtype=object).tolist() == expected.astype(str).tolist(), where
        return
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(np.asarray(actual, dtype=expected.dtype), expected, err_msg=where)
        return
    # Non-finite floats come back as null: as float, None is NaN.
    got = np.asarray(actual, dtype=np.float64)
    assert got.shape == expected.shape, f"{where}: shape {got.shape} != {expected.shape}"
    assert_allclose(got, expected.astype(np.float64), rtol=1e-3, atol=1e-5, err_msg=where)


@pytest.mark.parametrize("model_path", CASES, ids=[f"{path.parent.parent.name}/{path.parent.name}" for path in CASES])
def test_onnx_test_model_answers_its_recorded_outputs(register, predict_client, settings, model_path):
    settings.MAX_REQUEST_BODY_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = BODY_LIMIT
    data = model_path.read_bytes()
    case = model_path.parent

    registered = register(data, name=case.name)

    if registered["status"] == "error":
        assert registered["error_code"] == "runtime_load_failed", registered
        load_error = onnx_runtime_load_error(data)
        assert load_error is not None, "ONNX Runtime loads the model the API refused"
        pytest.skip(f"ONNX Runtime {ort.__version__} cannot load it: {load_error[:200]}")
    assert registered["status"] == "ready", registered

    model = onnx.load_from_string(data)
    inputs = graph_inputs(model)
    schema_names = [entry["name"] for entry in registered["input_schema"]]
    assert schema_names == [value.name for value in inputs]
    output_names = [entry["name"] for entry in registered["output_schema"]]
    assert output_names == [value.name for value in model.graph.output]

    data_sets = sorted(case.glob("test_data_set_*"))
    assert data_sets
    for data_set in data_sets:
        input_data = {}
        for index, value_info in enumerate(inputs):
            recorded = data_set / f"input_{index}.pb"
            input_data[value_info.name] = as_json(read_value(recorded, value_info.type))

        response = predict(predict_client, registered["id"], input_data)

        unsupported = [entry["name"] for entry in registered["input_schema"] if entry["kind"] != "tensor"]
        if unsupported:
            # Sequences, maps and optionals cannot be sent as JSON tensors.
            assert response.status_code == 400, response.content[:500]
            assert response.json()["code"] == "unsupported_input_type"
            assert f"'{unsupported[0]}'" in response.json()["detail"]
            continue
        assert response.status_code == 200, response.content[:500]
        output_data = response.json()["output_data"]
        assert list(output_data) == output_names
        for index, value_info in enumerate(model.graph.output):
            expected = read_value(data_set / f"output_{index}.pb", value_info.type)
            assert_same_value(output_data[value_info.name], expected, f"{data_set.name} {value_info.name}")
