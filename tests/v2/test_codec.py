"""The /v2 codec on its own: binary framing for every datatype (checked against tritonclient's
own serialisation), malformed framing, compression limits, and the validation rules."""

from __future__ import annotations

import gzip
import math
import tracemalloc
import zlib

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import serialize_byte_tensor

from core.exceptions import PayloadTooLarge
from core.tensor_checks import InvalidInput
from inference.v2 import codec

LIMITS = {"allow_non_finite": False, "max_elements": 1000, "max_depth": 32}

SAMPLES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 2**63]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [-1, 1, 2]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1], [-1, 1, 2]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [-1, 1, 2]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [-1, 1, 2**40]], dtype=np.int64),
    "FP16": np.array([[0.1, -0.0, 65504.0], [6e-8, -2.5, 1.0]], dtype=np.float16),
    "FP32": np.array([[0.1, -0.0, 3.4e38], [1e-45, -2.5, 1.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -0.0, 1.7e308], [5e-324, -2.5, 1.0]], dtype=np.float64),
    "BF16": np.array([[0.5, -0.0, 3.0e38], [1e-3, -2.5, 1.0]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([["a", "", "été ☀"], ["x" * 300, "\x00nul", "z"]], dtype=object),
}


def schema(datatype: str, shape=(-1, 3), name: str = "x") -> list[dict]:
    return [{"name": name, "datatype": datatype, "kind": "tensor", "shape": list(shape), "onnx_type": "tensor"}]


OUTPUTS = [{"name": "y", "datatype": "FP32", "kind": "tensor", "shape": [-1, 3], "onnx_type": "tensor(float)"}]


def parse(body: bytes, header_length, inputs, outputs=OUTPUTS, **limits):
    return codec.parse_infer_request(body, header_length, inputs=inputs, outputs=outputs, **(LIMITS | limits))


def framed(document: dict, *blobs: bytes) -> tuple[bytes, str]:
    header = orjson.dumps(document)
    return header + b"".join(blobs), str(len(header))


def binary_input(datatype: str, shape, blob: bytes, name: str = "x") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "parameters": {"binary_data_size": len(blob)}}


def rejected(call, *args, **kwargs) -> InvalidInput:
    with pytest.raises(InvalidInput) as error:
        call(*args, **kwargs)
    return error.value


# --- binary framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_binary_round_trip_for_every_datatype(datatype):
    array = SAMPLES[datatype]
    blob = codec.tensor_bytes(datatype, array)
    decoded = codec.decode_tensor("x", datatype, array.shape, blob)
    assert decoded.dtype == (np.dtype(object) if datatype == "BYTES" else array.dtype)
    assert decoded.shape == array.shape
    if datatype == "BYTES":
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.tobytes() == array.tobytes()  # bit for bit, -0.0 and subnormals included


@pytest.mark.parametrize("datatype", [name for name in SAMPLES if name != "BF16"])
def test_binary_bytes_are_what_tritonclient_sends_and_reads(datatype):
    array = SAMPLES[datatype]
    infer_input = httpclient.InferInput("x", list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    assert infer_input._get_binary_data() == codec.tensor_bytes(datatype, array)
    if datatype == "BYTES":
        expected = serialize_byte_tensor(array).item()
        assert codec.tensor_bytes(datatype, array) == expected


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_a_tritonclient_request_with_a_binary_input_of_every_datatype(datatype):
    array = SAMPLES[datatype]
    if datatype == "BF16":  # tritonclient 2.69 sends BF16 from float32 (truncating)
        infer_input = httpclient.InferInput("x", list(array.shape), "BF16")
        infer_input.set_data_from_numpy(array.astype(np.float32))
    else:
        infer_input = httpclient.InferInput("x", list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([infer_input])
    request = parse(body, str(header_length), schema(datatype))
    received = request.feeds["x"]
    assert received.shape == array.shape
    if datatype == "BYTES":
        assert received.tolist() == array.tolist()
    else:
        assert received.tobytes() == array.tobytes()


def test_binary_inputs_follow_the_json_in_its_order():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[7, 8, 9]], dtype=np.int64)
    inputs = [*schema("FP32", name="a"), *schema("INT64", name="b")]
    blob_a, blob_b = a.tobytes(), b.tobytes()
    body, length = framed(
        {"inputs": [binary_input("INT64", b.shape, blob_b, "b"), binary_input("FP32", a.shape, blob_a, "a")]},
        blob_b,
        blob_a,
    )
    feeds = parse(body, length, inputs).feeds
    assert list(feeds) == ["a", "b"]  # in the model's order
    np.testing.assert_array_equal(feeds["a"], a)
    np.testing.assert_array_equal(feeds["b"], b)


def test_binary_response_framing_as_tritonclient_reads_it():
    outputs = [
        (codec.RequestedOutput("y", "FP32", True), np.arange(6, dtype=np.float32).reshape(2, 3)),
        (codec.RequestedOutput("s", "BYTES", True), np.array(["é", ""], dtype=object)),
        (codec.RequestedOutput("b", "BOOL", False), np.array([True, False])),
        (codec.RequestedOutput("e", "INT64", True), np.zeros((0, 3), dtype=np.int64)),
    ]
    body, header_length = codec.encode_infer_response(
        model_name="m", model_version="1.0.0", request_id="r", outputs=outputs
    )
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert result.get_response()["id"] == "r"
    np.testing.assert_array_equal(result.as_numpy("y"), outputs[0][1])
    assert result.as_numpy("s").tolist() == ["é".encode(), b""]
    assert result.as_numpy("b").tolist() == [True, False]
    assert result.as_numpy("e").shape == (0, 3)


def test_json_response_renders_non_finite_values_as_null():
    outputs = [(codec.RequestedOutput("y", "FP32", False), np.array([1.0, np.nan, -np.inf], dtype=np.float32))]
    body, header_length = codec.encode_infer_response(
        model_name="m", model_version="1", request_id=None, outputs=outputs
    )
    assert header_length is None
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0, None, None]


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_outputs_rebuilt_from_the_cached_json_are_exact(datatype):
    array = SAMPLES[datatype]
    from inference.tensors import encode_outputs

    rendered, _ = encode_outputs(["y"], [array], [{"name": "y", "datatype": datatype}])
    rebuilt = codec.output_array(datatype, rendered["y"], list(array.shape))
    if datatype == "BYTES":
        assert rebuilt.tolist() == array.tolist()
    else:
        assert rebuilt.dtype == array.dtype
        assert rebuilt.tobytes() == array.tobytes()
    empty = codec.output_array(datatype, [], [0, 3])
    assert empty.shape == (0, 3)


# --- malformed framing ----------------------------------------------------------------------------


def test_header_length_must_be_a_number_within_the_body():
    body, _ = framed({"inputs": []})
    assert rejected(parse, body, "12a", schema("FP32")).code == "invalid_header_length"
    assert rejected(parse, body, "-3", schema("FP32")).code == "invalid_header_length"
    too_long = rejected(parse, body, str(len(body) + 1), schema("FP32"))
    assert too_long.code == "invalid_header_length"
    assert f"the body has only {len(body)} bytes" in too_long.detail


def test_a_header_length_that_cuts_the_json_says_so():
    blob = np.ones((1, 3), np.float32).tobytes()
    body, length = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob)
    error = rejected(parse, body, str(int(length) - 1), schema("FP32"))
    assert error.code == "parse_error"
    assert "counts exactly the JSON header's bytes" in error.detail


def test_binary_data_without_the_header_length_header_says_to_send_it():
    blob = np.ones((1, 3), np.float32).tobytes()
    body, _ = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob)
    error = rejected(parse, body, None, schema("FP32"))
    assert error.code == "parse_error"
    assert "send Inference-Header-Content-Length" in error.detail


def test_binary_sizes_must_add_up_to_the_bytes_sent():
    blob = np.ones((1, 3), np.float32).tobytes()
    extra, length = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob, b"\x00")
    error = rejected(parse, extra, length, schema("FP32"))
    assert error.code == "binary_size_mismatch"
    assert error.detail.startswith("The body has 13 bytes after the JSON header, but the binary inputs declare 12")
    short, length = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob[:-1])
    assert "only 11 bytes of binary data are left" in rejected(parse, short, length, schema("FP32")).detail


def test_binary_size_must_match_shape_and_datatype():
    blob = np.ones((1, 2), np.float32).tobytes()
    body, length = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob)
    error = rejected(parse, body, length, schema("FP32"))
    assert error.code == "binary_size_mismatch"
    assert "3 elements of 4 bytes, i.e. 12 bytes; its binary data has 8" in error.detail


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x02\x00\x00\x00ab\x05\x00\x00\x00abc", "end inside element 1"),
        (b"\x02\x00\x00", "end inside element 0"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x00", "1 bytes left after them"),
    ],
)
def test_malformed_bytes_elements(blob, message):
    body, length = framed({"inputs": [binary_input("BYTES", (2,), blob)]}, blob)
    error = rejected(parse, body, length, schema("BYTES", (-1,)))
    assert error.code == "binary_size_mismatch"
    assert message in error.detail


def test_bytes_inputs_must_be_utf8():
    blob = b"\x02\x00\x00\x00\xff\xfe"
    body, length = framed({"inputs": [binary_input("BYTES", (1,), blob)]}, blob)
    assert rejected(parse, body, length, schema("BYTES", (-1,))).code == "invalid_utf8"


def test_bool_bytes_must_be_0_or_1():
    blob = b"\x01\x00\x02"
    body, length = framed({"inputs": [binary_input("BOOL", (1, 3), blob)]}, blob)
    error = rejected(parse, body, length, schema("BOOL"))
    assert error.code == "invalid_bool"
    assert "byte 2 is 2" in error.detail


def test_an_input_sends_data_one_way():
    blob = np.ones((1, 3), np.float32).tobytes()
    both = binary_input("FP32", (1, 3), blob) | {"data": [1, 2, 3]}
    body, length = framed({"inputs": [both]}, blob)
    assert "has both" in rejected(parse, body, length, schema("FP32")).detail
    neither = {"name": "x", "datatype": "FP32", "shape": [1, 3]}
    assert rejected(parse, orjson.dumps({"inputs": [neither]}), None, schema("FP32")).code == "missing_data"
    bad_size = {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": "12"}}
    assert "non-negative integer" in rejected(parse, orjson.dumps({"inputs": [bad_size]}), None, schema("FP32")).detail


# --- raw bodies -------------------------------------------------------------------------------------


def test_raw_body_deduces_the_variable_dimension():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    request = parse(x.tobytes(), "0", schema("FP32"))
    np.testing.assert_array_equal(request.feeds["x"], x)
    assert [(output.name, output.binary) for output in request.outputs] == [("y", False)]


def test_raw_body_rules():
    assert rejected(parse, b"\x00" * 10, "0", schema("FP32")).code == "binary_size_mismatch"
    assert "more than one variable dimension" in rejected(parse, b"\x00" * 8, "0", schema("FP32", (-1, -1))).detail
    two_inputs = [*schema("FP32", name="a"), *schema("FP32", name="b")]
    assert "models with one input" in rejected(parse, b"\x00" * 12, "0", two_inputs).detail
    assert "one element" in rejected(parse, b"abc", "0", schema("BYTES", (-1,))).detail
    text = parse("été".encode(), "0", schema("BYTES", (1,))).feeds["x"]
    assert text.tolist() == ["été"]


# --- compression --------------------------------------------------------------------------------------


def test_gzip_deflate_and_raw_deflate_bodies():
    body = b'{"inputs": []}' * 100
    raw_deflate = zlib.compressobj(wbits=-15)
    assert codec.read_body(gzip.compress(body), "gzip", limit=10_000) == body
    assert codec.read_body(zlib.compress(body), "Deflate", limit=10_000) == body
    assert codec.read_body(raw_deflate.compress(body) + raw_deflate.flush(), "deflate", limit=10_000) == body
    assert codec.read_body(gzip.compress(body[:700]) + gzip.compress(body[700:]), "gzip", limit=10_000) == body
    assert codec.read_body(body, "identity", limit=10) == body  # the raw size is checked before


def test_a_gzip_bomb_stops_at_the_limit_without_inflating():
    bomb = gzip.compress(b"\x00" * (200 * 1024 * 1024))  # 200 MB of zeros in ~200 KB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as error:
            codec.read_body(bomb, "gzip", limit=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.value.code == "body_too_large"
    assert "decompresses to more than 1048576 bytes" in error.value.detail
    assert peak < 8 * 1024 * 1024


def test_broken_compressed_bodies_are_400_and_unknown_codings_415():
    compressed = gzip.compress(b"x" * 1000)
    assert rejected(codec.read_body, compressed[:-20], "gzip", limit=10_000).code == "invalid_encoding"
    assert rejected(codec.read_body, b"not gzip", "gzip", limit=10_000).code == "invalid_encoding"
    assert "after the end" in rejected(codec.read_body, zlib.compress(b"x") + b"junk", "deflate", limit=100).detail
    with pytest.raises(codec.UnsupportedEncoding) as error:
        codec.read_body(b"x", "br", limit=100)
    assert error.value.status_code == 415


# --- validation ------------------------------------------------------------------------------------------


def json_request(*inputs: dict, **extra) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def json_input(data, shape=(1, 3), datatype="FP32", name="x") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def test_json_data_flat_or_nested_row_major():
    flat = parse(json_request(json_input([1, 2, 3, 4, 5, 6], (2, 3))), None, schema("FP32")).feeds["x"]
    nested = parse(json_request(json_input([[1, 2, 3], [4, 5, 6]], (2, 3))), None, schema("FP32")).feeds["x"]
    np.testing.assert_array_equal(flat, nested)
    assert flat.dtype == np.float32


@pytest.mark.parametrize(
    ("item", "code", "message"),
    [
        (json_input([1, 2, 3], datatype="FP64"), "datatype_mismatch", "Input 'x' is FP32; the request declares FP64"),
        (json_input([1, 2, 3], datatype="FLOAT32"), "invalid_datatype", "not a v2 datatype"),
        (json_input([1, 2, 3], shape=(3,)), "invalid_shape", "add a leading batch dimension of 1"),
        (json_input([1, 2, 3, 4], shape=(1, 4)), "invalid_shape", "expects shape [-1, 3]"),
        (json_input([1, 2], shape=(1, 3)), "invalid_shape", "i.e. 3 elements, but its data holds 2"),
        (json_input([1, 2, 3, 4], shape=(1, 3)), "invalid_shape", "its data holds 4"),
        (json_input([0] * 2000, shape=(1, 3)), "invalid_shape", "its data holds more"),
        (json_input([1, 2, 3], shape=(1, "3")), "invalid_shape", "non-negative integers"),
        (json_input([1, None, 3]), "non_finite_value", "null"),
        (json_input([1, "2", 3]), "invalid_dtype", "strings"),
        (json_input([[1, 2], [3]], shape=(1, 3)), "ragged_array", "ragged"),
        (json_input([1, 2, 3], name="y"), "unknown_input", "Unknown input 'y'. This model's inputs: 'x'."),
        (json_input([0] * 3000, shape=(1000, 3)), "too_many_elements", "over the 1000 allowed"),
    ],
)
def test_input_rules(item, code, message):
    error = rejected(parse, json_request(item), None, schema("FP32"))
    assert error.code == code
    assert message in error.detail


def test_missing_and_duplicate_inputs():
    inputs = [*schema("FP32", name="a"), *schema("FP32", name="b")]
    a = json_input([1, 2, 3], name="a")
    assert rejected(parse, json_request(a), None, inputs).detail == "Missing input 'b'. This model needs 'a', 'b'."
    assert rejected(parse, json_request(a, a), None, inputs).code == "duplicate_input"


def test_the_element_limit_counts_every_input():
    inputs = [*schema("FP32", name="a"), *schema("FP32", name="b")]
    a, b = json_input([0] * 600, (200, 3), name="a"), json_input([0] * 600, (200, 3), name="b")
    error = rejected(parse, json_request(a, b), None, inputs)
    assert (error.code, error.input_name) == ("too_many_elements", "b")


def test_binary_non_finite_values_follow_the_models_rule():
    blob = np.array([[1.0, np.inf, 2.0]], dtype=np.float32).tobytes()
    body, length = framed({"inputs": [binary_input("FP32", (1, 3), blob)]}, blob)
    error = rejected(parse, body, length, schema("FP32"))
    assert error.code == "non_finite_value"
    assert "at index [0, 1]" in error.detail
    allowed = parse(body, length, schema("FP32"), allow_non_finite=True).feeds["x"]
    assert np.isinf(allowed[0, 1])


def test_requested_outputs_and_their_encoding():
    outputs = [
        {"name": "y", "datatype": "FP32", "kind": "tensor", "shape": [-1], "onnx_type": "tensor(float)"},
        {"name": "z", "datatype": "INT64", "kind": "tensor", "shape": [-1], "onnx_type": "tensor(int64)"},
        {"name": "maps", "datatype": None, "kind": "sequence", "shape": None, "onnx_type": "seq(map(int64,float))"},
    ]
    x = json_input([1, 2, 3])

    def requested(**extra):
        request = parse(json_request(x, **extra), None, schema("FP32"), outputs=outputs)
        return [(output.name, output.binary) for output in request.outputs]

    assert requested() == [("y", False), ("z", False)]
    assert requested(parameters={"binary_data_output": True}) == [("y", True), ("z", True)]
    assert requested(
        outputs=[{"name": "z"}, {"name": "y", "parameters": {"binary_data": False}}],
        parameters={"binary_data_output": True},
    ) == [("z", True), ("y", False)]
    assert requested(outputs=[{"name": "y", "parameters": {"binary_data": True}}]) == [("y", True)]

    def refused(**extra) -> InvalidInput:
        return rejected(parse, json_request(x, **extra), None, schema("FP32"), outputs=outputs)

    assert refused(outputs=[{"name": "w"}]).detail == "Unknown output 'w'. This model's outputs: 'y', 'z', 'maps'."
    assert refused(outputs=[{"name": "maps"}]).code == "unsupported_output_type"
    assert refused(outputs=[{"name": "y", "parameters": {"classification": 2}}]).code == "unsupported_parameter"
    assert refused(outputs=[{"name": "y", "parameters": {"shared_memory_region": "r"}}]).code == "unsupported_parameter"
    assert refused(outputs=[{"name": "y"}, {"name": "y"}]).code == "invalid_request"
    assert refused(parameters={"binary_data_output": "yes"}).code == "invalid_request"


def test_request_level_fields():
    x = json_input([1, 2, 3])
    request = parse(
        json_request(x, id="abc", parameters={"priority": 1, "anything": "goes", "skip_cache": True}),
        None,
        schema("FP32"),
    )
    assert (request.id, request.skip_cache) == ("abc", True)
    assert rejected(parse, json_request(x, id=7), None, schema("FP32")).code == "invalid_request"
    assert rejected(parse, b"[]", None, schema("FP32")).code == "invalid_request"
    assert rejected(parse, b'{"inputs": {}}', None, schema("FP32")).code == "invalid_request"
    assert rejected(parse, b"\xff\x00garbage", None, schema("FP32")).code == "parse_error"
    assert (
        rejected(
            parse,
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, NaN, 3]}]}',
            None,
            schema("FP32"),
        ).code
        == "non_finite_value"
    )


def test_metadata_tensors():
    assert codec.tensor_metadata(schema("FP32")[0]) == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
    unknown_rank = {"name": "x", "datatype": "FP32", "kind": "tensor", "shape": None}
    assert codec.tensor_metadata(unknown_rank)["shape"] == [-1]
    assert math.prod([]) == 1  # a scalar has one element, which the shape checks rely on
