"""Every test-data model of the onnx package's `pytorch-converted` and `simple` folders that ONNX
Runtime runs here, served by a real server and driven by tritonclient: the inputs and expected
outputs are the models' own `.pb` files (tolerance rtol 1e-3, atol 1e-5, as for ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from tests.v2.models import ATOL, RTOL, backend_cases

pytestmark = pytest.mark.e2e


def test_the_folders_hold_models_onnxruntime_runs():
    # Guards against a silently empty parametrization (an onnx upgrade moving the data).
    assert len(backend_cases()) >= 50


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("case", backend_cases(), ids=lambda case: case.name)
def test_backend_model_matches_its_expected_outputs(triton, case, binary):
    metadata = triton.get_model_metadata(case.name)
    declared = {entry["name"]: entry["datatype"] for entry in metadata["inputs"]}
    inputs = []
    for name, array in case.inputs.items():
        datatype = np_to_triton_dtype(array.dtype)
        assert declared[name] == datatype
        infer_input = httpclient.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array, binary_data=binary)
        inputs.append(infer_input)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in case.outputs]

    result = triton.infer(case.name, inputs, outputs=outputs, parameters={"skip_cache": True})

    for name, expected in case.outputs.items():
        received = result.as_numpy(name)
        assert received.shape == expected.shape, name
        if expected.dtype == object:
            as_text = [item.decode() if isinstance(item, bytes) else item for item in received.reshape(-1)]
            assert as_text == [item.decode() if isinstance(item, bytes) else item for item in expected.reshape(-1)]
        else:
            assert received.dtype == expected.dtype, name
            np.testing.assert_allclose(received, expected, rtol=RTOL, atol=ATOL, err_msg=name)
