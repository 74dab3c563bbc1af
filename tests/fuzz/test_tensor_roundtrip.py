"""Property tests: every v2 datatype survives the trip out and back in exactly.

An array a model could output is encoded as the server encodes outputs (/api/v1 JSON with
`inference.tensors.encode_outputs`; /v2 JSON and binary with `inference.v2.codec`), then sent
back as a request input and decoded as the server decodes inputs: the decoded array must be
the original, element for element and in the input's dtype. Finite values only: NaN and
infinity are refused as inputs by design (tests/security/test_inputs.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.tensor_types import DTYPES
from inference.tensors import decode_inputs, encode_outputs
from inference.v2 import codec

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
LIMITS = {"allow_non_finite": False, "max_elements": 10_000, "max_depth": 32}
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def arrays(datatype: str) -> st.SearchStrategy[np.ndarray]:
    """Arrays of ``datatype`` with any finite values, extremes included."""
    if datatype == "BYTES":
        text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
        return SHAPES.flatmap(lambda shape: hnp.arrays(object, shape, elements=text))
    if datatype == "BF16":
        # Every finite bfloat16: the 16-bit patterns whose exponent is not all ones.
        words = st.integers(0, 0xFFFF).filter(lambda word: (word >> 7) & 0xFF != 0xFF)
        return SHAPES.flatmap(
            lambda shape: hnp.arrays(np.uint16, shape, elements=words).map(lambda a: a.view(ml_dtypes.bfloat16))
        )
    dtype = DTYPES[datatype]
    if dtype.kind == "f":
        return SHAPES.flatmap(
            lambda shape: hnp.arrays(
                dtype, shape, elements=st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
            )
        )
    return SHAPES.flatmap(lambda shape: hnp.arrays(dtype, shape))


def schema(datatype: str, ndim: int) -> list[dict]:
    return [{"name": "x", "datatype": datatype, "kind": "tensor", "shape": [-1] * ndim, "onnx_type": "tensor"}]


def assert_same(decoded: np.ndarray, original: np.ndarray, datatype: str) -> None:
    assert decoded.shape == original.shape
    if datatype == "BYTES":
        assert decoded.tolist() == original.tolist()
        return
    assert decoded.dtype == original.dtype
    # Bit for bit: -0.0 stays -0.0, and every bfloat16 word is the one sent.
    assert decoded.tobytes() == original.tobytes()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_api_v1_json_round_trip(datatype):
    @BOUNDED
    @given(arrays(datatype))
    def round_trip(original):
        entries = schema(datatype, original.ndim)
        rendered, warnings = encode_outputs(["x"], [original], entries)
        assert warnings == []
        received = orjson.loads(orjson.dumps({"input_data": rendered}))["input_data"]
        decoded = decode_inputs(received, entries, **LIMITS)["x"]
        assert_same(decoded, original, datatype)

    round_trip()


def _response(datatype: str, original: np.ndarray, *, binary: bool) -> tuple[bytes, int | None]:
    requested = codec.RequestedOutput(name="x", datatype=datatype, binary=binary)
    return codec.encode_infer_response(
        model_name="m", model_version="1.0.0", request_id=None, outputs=[(requested, original)]
    )


@pytest.mark.parametrize("datatype", DATATYPES)
def test_v2_json_round_trip(datatype):
    @BOUNDED
    @given(arrays(datatype))
    def round_trip(original):
        body, header_length = _response(datatype, original, binary=False)
        assert header_length is None
        (output,) = orjson.loads(body)["outputs"]
        request = orjson.dumps(
            {
                "inputs": [
                    {"name": "x", "shape": output["shape"], "datatype": output["datatype"], "data": output["data"]}
                ]
            }
        )
        entries = schema(datatype, original.ndim)
        parsed = codec.parse_infer_request(request, None, inputs=entries, outputs=entries, **LIMITS)
        assert_same(parsed.feeds["x"], original, datatype)

    round_trip()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_v2_binary_round_trip(datatype):
    @BOUNDED
    @given(arrays(datatype))
    def round_trip(original):
        body, header_length = _response(datatype, original, binary=True)
        header, blob = body[:header_length], body[header_length:]
        (output,) = orjson.loads(header)["outputs"]
        assert output["parameters"]["binary_data_size"] == len(blob)
        request_header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": output["shape"],
                        "datatype": datatype,
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ]
            }
        )
        entries = schema(datatype, original.ndim)
        parsed = codec.parse_infer_request(
            request_header + blob, str(len(request_header)), inputs=entries, outputs=entries, **LIMITS
        )
        assert_same(parsed.feeds["x"], original, datatype)

    round_trip()
