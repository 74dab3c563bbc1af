"""inference.tensors: which request bodies and inputs are accepted, what they become, and
which are rejected with which code. Pure functions: no database."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import ml_dtypes
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.tensor_checks import InvalidInput
from inference.tensors import decode_inputs, encode_outputs, example_input, parse_json_body, tensor_digest

NAME = "features"
LIMITS = {"max_elements": 10_000, "max_depth": 32}
NUMERIC_DTYPES = {
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": ml_dtypes.bfloat16,
}


def tensor(datatype: str = "FP32", shape: list[int] | None = (-1, 4), name: str = NAME) -> dict:
    """A schema entry as registry.onnx_inspect writes it."""
    onnx_types = {"FP32": "float", "FP64": "double", "FP16": "float16", "BF16": "bfloat16", "BYTES": "string"}
    return {
        "name": name,
        "kind": "tensor",
        "datatype": datatype,
        "onnx_type": f"tensor({onnx_types.get(datatype, datatype.lower())})",
        "shape": None if shape is None else list(shape),
        "dim_names": None if shape is None else [None] * len(shape),
    }


def decode(value, datatype: str = "FP32", shape: list[int] | None = (-1, 4), **options) -> np.ndarray:
    return decode_inputs({NAME: value}, [tensor(datatype, shape)], **{**LIMITS, **options})[NAME]


@contextmanager
def rejected(code: str, name: str | None = NAME) -> Iterator[pytest.ExceptionInfo]:
    with pytest.raises(InvalidInput) as caught:
        yield caught
    assert caught.value.code == code, caught.value.detail
    assert caught.value.status_code == 400
    if name is not None:
        assert f"'{name}'" in caught.value.detail
        assert caught.value.input_name == name


# --- parse_json_body ---------------------------------------------------------------------------


def test_parse_returns_the_document():
    assert parse_json_body(b'{"x": [[1, 2.5], [-3, 4e-3]]}', max_depth=8) == {"x": [[1, 2.5], [-3, 0.004]]}


@pytest.mark.parametrize("body", [b'{"x": [NaN]}', b'{"x": [1, Infinity]}', b'{"x": -Infinity}', b"[nan]"])
def test_parse_rejects_nan_and_infinity_literals(body):
    with rejected("non_finite_value", name=None) as caught:
        parse_json_body(body, max_depth=8)
    assert "NaN or Infinity" in caught.value.detail


@pytest.mark.parametrize("body", [b'{"x": [1e400]}', b"-1e400", b'{"x": 1' + b"0" * 400 + b"}"])
def test_parse_rejects_numbers_that_overflow_to_infinity(body):
    with rejected("non_finite_value", name=None) as caught:
        parse_json_body(body, max_depth=8)
    assert "too large for a 64-bit float" in caught.value.detail


@pytest.mark.parametrize(
    "body", [b'{"x": [1,', b"", b"   ", b"\xff\xfe", b"{'x': 1}", b'{"x": 01}', b"[info]", b"[nano]"]
)
def test_parse_rejects_malformed_json(body):
    with rejected("parse_error", name=None):
        parse_json_body(body, max_depth=8)


@pytest.mark.parametrize("body", [b"[" * 10_000 + b"]" * 10_000, b"[" * 10_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000])
def test_parse_rejects_deep_nesting_without_recursion_error(body):
    with rejected("nesting_too_deep", name=None):
        parse_json_body(body, max_depth=64)


def test_parse_enforces_max_depth_below_orjsons_own_cap():
    assert parse_json_body(b'{"x": [[[1]]]}', max_depth=4) == {"x": [[[1]]]}
    with rejected("nesting_too_deep", name=None):
        parse_json_body(b'{"x": [[[[1]]]]}', max_depth=4)
    with rejected("nesting_too_deep", name=None):
        parse_json_body(b'{"x": [1, 2, {"y": [[3]]}]}', max_depth=4)


def test_parse_does_not_count_brackets_inside_strings():
    body = rb'{"x": "[[[[[[", "y\"[[[[": ["\\", "\\\"[[[[\\\\"], "z": "]]]]]]]]"}'
    assert parse_json_body(body, max_depth=2) == orjson.loads(body)
    # ...while brackets that a string seems to close do not hide real nesting.
    with rejected("nesting_too_deep", name=None):
        parse_json_body(b'{"x": "]]]]", "y": [[[[1]]]]}', max_depth=3)


# --- decode_inputs: the inputs object ---------------------------------------------------------


@pytest.mark.parametrize("input_data", [[[1, 2, 3, 4]], "x", 3, None])
def test_decode_requires_an_object_of_inputs(input_data):
    with rejected("invalid_input", name=None) as caught:
        decode_inputs(input_data, [tensor()], **LIMITS)
    assert NAME in caught.value.detail


def test_decode_rejects_an_object_as_an_input_value():
    with rejected("invalid_input"):
        decode({"a": 1})


def test_decode_lists_every_missing_input():
    schema = [tensor(name="a"), tensor(name="b"), tensor(name="c")]
    with rejected("missing_input", name="a") as caught:
        decode_inputs({"b": [[1, 2, 3, 4]]}, schema, **LIMITS)
    assert "'a', 'c'" in caught.value.detail


def test_decode_lists_the_accepted_names_for_an_unknown_input():
    schema = [tensor(name="a"), tensor(name="b")]
    with rejected("unknown_input", name="colour") as caught:
        decode_inputs({"a": [[1, 2, 3, 4]], "b": [[1, 2, 3, 4]], "colour": 1}, schema, **LIMITS)
    assert "accepts 'a', 'b'" in caught.value.detail


@pytest.mark.parametrize("kind, onnx_type", [("sequence", "seq(tensor(float))"), ("map", "map(int64,tensor(float))")])
def test_decode_rejects_non_tensor_inputs(kind, onnx_type):
    entry = {"name": NAME, "kind": kind, "datatype": None, "onnx_type": onnx_type, "shape": None, "dim_names": None}
    with rejected("unsupported_input_type") as caught:
        decode_inputs({NAME: [1.0]}, [entry], **LIMITS)
    assert onnx_type in caught.value.detail


def test_decode_rejects_tensors_without_a_json_datatype():
    entry = {**tensor(), "datatype": None, "onnx_type": "tensor(float8e4m3fn)"}
    with rejected("unsupported_input_type"):
        decode_inputs({NAME: [[1, 2, 3, 4]]}, [entry], **LIMITS)


def test_decode_converts_several_inputs():
    schema = [tensor("FP32", [-1, 2], name="a"), tensor("INT64", [-1], name="b"), tensor("BOOL", [], name="c")]
    arrays = decode_inputs({"a": [[1, 2.5]], "b": [7, -8], "c": True}, schema, **LIMITS)
    assert arrays["a"].dtype == np.float32 and arrays["a"].tolist() == [[1.0, 2.5]]
    assert arrays["b"].dtype == np.int64 and arrays["b"].tolist() == [7, -8]
    assert arrays["c"].dtype == np.bool_ and arrays["c"].shape == () and arrays["c"].item() is True


# --- decode_inputs: element types -------------------------------------------------------------


@pytest.mark.parametrize("datatype, dtype", NUMERIC_DTYPES.items())
def test_decode_converts_to_each_numeric_datatype(datatype, dtype):
    array = decode([[0, 1, 2, 3.0]], datatype)
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == [[0, 1, 2, 3]]


def test_decode_float_input_takes_ints_and_floats():
    array = decode([[1, 2.5, -3, 1e-3]])
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.array([[1, 2.5, -3, 1e-3]], dtype=np.float32))


def test_decode_fp16_and_bf16():
    half = decode([[0.5, -2, 65504, 1e-3]], "FP16")
    assert half.dtype == np.float16 and half.tolist()[0][:3] == [0.5, -2.0, 65504.0]
    brain = decode([[0.5, -2, 3e38, 1.0]], "BF16")
    assert brain.dtype == ml_dtypes.bfloat16 and brain.tolist()[0][:2] == [0.5, -2.0]


def test_decode_int_input_takes_integral_floats():
    array = decode([[3.0, -2.0, 0.0, 1e3]], "INT32")
    assert array.dtype == np.int32 and array.tolist() == [[3, -2, 0, 1000]]


@pytest.mark.parametrize("datatype", ["INT8", "INT32", "INT64", "UINT64"])
def test_decode_int_input_rejects_fractions(datatype):
    with rejected("invalid_dtype") as caught:
        decode([[1, 2, 3, 3.5]], datatype)
    assert "3.5" in caught.value.detail and "[0, 3]" in caught.value.detail


@pytest.mark.parametrize(
    "datatype, value, range_text",
    [
        ("INT8", 128, "-128 to 127"),
        ("INT8", -129, "-128 to 127"),
        ("UINT8", -1, "0 to 255"),
        ("UINT8", 256, "0 to 255"),
        ("INT16", 40_000, "-32768 to 32767"),
        ("UINT16", 70_000, "0 to 65535"),
        ("INT32", 2**31, "-2147483648 to 2147483647"),
        ("UINT32", -1, "0 to 4294967295"),
        ("INT64", 2**63, "-9223372036854775808 to 9223372036854775807"),
        ("INT64", -(2**63) - 1, "-9223372036854775808 to 9223372036854775807"),
        ("UINT64", 2**64, "0 to 18446744073709551615"),
        ("UINT64", -1, "0 to 18446744073709551615"),
        ("INT32", 3e9, "-2147483648 to 2147483647"),
    ],
)
def test_decode_rejects_integers_out_of_range(datatype, value, range_text):
    with rejected("integer_overflow") as caught:
        decode([[1, 2, value, 4]], datatype)
    assert range_text in caught.value.detail
    assert str(int(value)) in caught.value.detail and "[0, 2]" in caught.value.detail


def test_decode_accepts_integers_at_the_limits():
    assert decode([[-(2**63), 2**63 - 1, 0, 1]], "INT64").tolist() == [[-(2**63), 2**63 - 1, 0, 1]]
    # numpy infers float64 for int64 and uint64 values together; they must still arrive exactly.
    assert decode([[0, 1, 2**64 - 1, 2**63 + 1]], "UINT64").tolist() == [[0, 1, 2**64 - 1, 2**63 + 1]]
    assert decode([[-128, 127, 0, 0]], "INT8").tolist() == [[-128, 127, 0, 0]]


def test_decode_rejects_floats_too_large_to_be_exact_integers():
    # orjson reads -9223372036854775809 (below int64) as the float -2**63.
    with rejected("invalid_dtype") as caught:
        decode([[float(2**60), 1, 2, 3]], "INT64")
    assert "plain JSON integer" in caught.value.detail


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "UINT8"])
@pytest.mark.parametrize("row", [[1.0, True, 3.0, 4.0], [1, 2, 3, False], [True, False, True, True]])
def test_decode_rejects_booleans_in_numeric_inputs(datatype, row):
    with rejected("invalid_dtype") as caught:
        decode([row], datatype)
    assert "true/false" in caught.value.detail


def test_decode_rejects_a_boolean_scalar_in_a_numeric_input():
    with rejected("invalid_dtype"):
        decode(True, "FP32", shape=[])


@pytest.mark.parametrize("datatype", ["FP32", "INT32", "BF16"])
@pytest.mark.parametrize("text", ["1.5", "abc", "", "3"])
def test_decode_rejects_strings_in_numeric_inputs(datatype, text):
    with rejected("invalid_dtype") as caught:
        decode([[1, 2, 3, text]], datatype)
    assert "without quotes" in caught.value.detail


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32"])
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_decode_rejects_non_finite_strings(datatype, text):
    with rejected("non_finite_value") as caught:
        decode([[1, 2, 3, text]], datatype)
    assert repr(text) in caught.value.detail


def test_decode_rejects_non_finite_strings_even_when_non_finite_values_are_allowed():
    with rejected("non_finite_value") as caught:
        decode([[1, 2, 3, "nan"]], allow_non_finite=True)
    assert "null" in caught.value.detail


def test_decode_rejects_null_in_a_float_input():
    with rejected("non_finite_value") as caught:
        decode([[1, None, 3, 4]])
    assert "[0, 1]" in caught.value.detail


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "BF16"])
def test_decode_null_is_nan_when_non_finite_values_are_allowed(datatype):
    array = decode([[1, None, 3, None]], datatype, allow_non_finite=True)
    assert array.dtype == np.dtype(NUMERIC_DTYPES[datatype])
    assert np.isnan(array.astype(np.float64)).tolist() == [[False, True, False, True]]


@pytest.mark.parametrize("datatype", ["INT64", "UINT8"])
def test_decode_null_is_rejected_in_integer_inputs_even_when_allowed(datatype):
    with rejected("invalid_dtype"):
        decode([[1, None, 3, 4]], datatype, allow_non_finite=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_decode_rejects_nan_and_infinity_floats(bad):
    with rejected("non_finite_value"):
        decode([[1, bad, 3, 4]], "FP64")
    with rejected("non_finite_value"):
        decode([[1, bad, 3, 4]], "INT64", allow_non_finite=True)
    assert not np.isfinite(decode([[1, bad, 3, 4]], "FP32", allow_non_finite=True)[0, 1])


@pytest.mark.parametrize(
    "datatype, value, limit",
    [
        ("FP32", 1e39, "3.40282e+38"),
        ("FP16", 70_000, "65504"),
        ("BF16", 1e39, "3.38953e+38"),
        ("FP64", 10**400, "1.79769e+308"),
    ],
)
def test_decode_rejects_finite_numbers_too_large_for_the_float_type(datatype, value, limit):
    with rejected("value_out_of_range") as caught:
        decode([[1, 2, 3, value]], datatype)
    assert limit in caught.value.detail and "[0, 3]" in caught.value.detail
    # A finite number that overflows is never read as the infinity that is allowed here.
    with rejected("value_out_of_range"):
        decode([[1, 2, 3, value]], datatype, allow_non_finite=True)


def test_decode_bool_input_takes_only_true_and_false():
    array = decode([[True, False, False, True]], "BOOL")
    assert array.dtype == np.bool_ and array.tolist() == [[True, False, False, True]]
    for row in ([1, 0, 1, 0], [True, 1, False, 0], [True, "true", False, False], [True, None, True, True]):
        with rejected("invalid_dtype"):
            decode([row], "BOOL")


def test_decode_string_input_is_an_object_array_of_str():
    array = decode([["a", "", "ünï", "1"]], "BYTES")
    assert array.dtype == object and array.tolist() == [["a", "", "ünï", "1"]]
    assert {type(item) for item in array.flat} == {str}


@pytest.mark.parametrize("bad", [1, 2.5, True, None, {"a": 1}])
def test_decode_string_input_rejects_other_types(bad):
    with rejected("invalid_dtype") as caught:
        decode([["a", "b", "c", bad]], "BYTES")
    assert "JSON string" in caught.value.detail


# --- decode_inputs: shapes and limits ---------------------------------------------------------


def test_decode_rejects_a_scalar_for_a_matrix_input():
    with rejected("invalid_shape") as caught:
        decode(3.0)
    assert "[-1, 4]" in caught.value.detail and "received []" in caught.value.detail


def test_decode_rejects_a_three_dimensional_value_for_a_matrix_input():
    with rejected("invalid_shape") as caught:
        decode([[[1, 2, 3, 4]]])
    assert "[-1, 4]" in caught.value.detail and "[1, 1, 4]" in caught.value.detail


def test_decode_suggests_a_batch_of_one_for_a_single_row():
    with rejected("invalid_shape") as caught:
        decode([1, 2, 3, 4])
    assert "batch of one" in caught.value.detail


def test_decode_rejects_a_fixed_dimension_of_another_size():
    with rejected("invalid_shape") as caught:
        decode([[1, 2, 3]])
    assert "[-1, 4]" in caught.value.detail and "[1, 3]" in caught.value.detail


def test_decode_checks_fixed_leading_dimensions():
    assert decode([[1, 2], [3, 4]], shape=[2, 2]).shape == (2, 2)
    with rejected("invalid_shape"):
        decode([[1, 2]], shape=[2, 2])


def test_decode_accepts_any_rank_when_the_rank_is_unknown():
    assert decode(1.5, shape=None).shape == ()
    assert decode([1, 2], shape=None).shape == (2,)
    assert decode([[[1], [2]]], "INT8", shape=None).shape == (1, 2, 1)


def test_decode_accepts_an_empty_batch():
    assert decode([], shape=[-1]).shape == (0,)
    assert decode([], "BYTES", shape=[-1]).dtype == object
    assert decode([], "BOOL", shape=[-1]).dtype == np.bool_


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BOOL", "BYTES"])
@pytest.mark.parametrize("value", [[[1, 2], [3]], [1, [2, 3]], [[1, 2], 3], [[[1, 2]], [[3]]]])
def test_decode_rejects_ragged_arrays(datatype, value):
    if datatype == "BYTES":
        value = orjson.loads(orjson.dumps(value).replace(b"1", b'"a"').replace(b"2", b'"b"').replace(b"3", b'"c"'))
    elif datatype == "BOOL":
        value = orjson.loads(orjson.dumps(value).replace(b"1", b"true").replace(b"2", b"false").replace(b"3", b"true"))
    with rejected("ragged_array"):
        decode(value, datatype, shape=None)


def test_decode_rejects_too_many_elements_in_one_input():
    with rejected("too_many_elements") as caught:
        decode([[0.5] * 4] * 26, max_elements=100)
    assert "104" in caught.value.detail and "100" in caught.value.detail


def test_decode_counts_elements_across_all_inputs():
    schema = [tensor(name="a"), tensor(name="b")]
    value = [[0.5] * 4] * 15
    assert len(decode_inputs({"a": value, "b": value}, schema, max_elements=120, max_depth=8)) == 2
    with rejected("too_many_elements", name="b"):
        decode_inputs({"a": value, "b": value}, schema, max_elements=100, max_depth=8)


def test_decode_rejects_deep_nesting_without_recursion_error():
    value: object = 1.0
    for _ in range(10_000):
        value = [value]
    with rejected("nesting_too_deep"):
        decode(value, shape=None)
    with rejected("nesting_too_deep"):
        decode([[[[1.0]]]], shape=None, max_depth=3)
    # numpy's own limit on dimensions applies whatever max_depth says.
    value = 1.0
    for _ in range(65):
        value = [value]
    with rejected("nesting_too_deep"):
        decode(value, shape=None, max_depth=1_000)


# --- encode_outputs ---------------------------------------------------------------------------


def encode_one(value, datatype: str | None = "FP32", kind: str = "tensor"):
    schema = [{"name": "y", "kind": kind, "datatype": datatype, "onnx_type": "", "shape": None, "dim_names": None}]
    rendered, warnings = encode_outputs(["y"], [value], schema)
    orjson.dumps(rendered)  # JSON-ready: no numpy types, no NaN
    return rendered["y"], warnings


def test_encode_renders_finite_floats_as_plain_lists():
    assert encode_one(np.array([[0.5, -2.0]], dtype=np.float32)) == ([[0.5, -2.0]], [])
    assert encode_one(np.array([0.1], dtype=np.float16), "FP16") == ([float(np.float16(0.1))], [])
    assert encode_one(np.array([1.5], dtype=ml_dtypes.bfloat16), "BF16") == ([1.5], [])
    assert encode_one(np.array(2.5)) == (2.5, [])


def test_encode_renders_non_finite_floats_as_null_with_a_warning():
    value, warnings = encode_one(np.array([[1.0, np.nan], [np.inf, -np.inf]], dtype=np.float32))
    assert value == [[1.0, None], [None, None]]
    assert warnings == ["output 'y': 3 non-finite values rendered as null"]
    value, warnings = encode_one(np.array(np.nan, dtype=np.float16), "FP16")
    assert value is None and warnings == ["output 'y': 1 non-finite value rendered as null"]


def test_encode_renders_ints_bools_and_strings():
    assert encode_one(np.array([[2**62, -1]], dtype=np.int64), "INT64") == ([[2**62, -1]], [])
    assert encode_one(np.array([2**64 - 1], dtype=np.uint64), "UINT64") == ([2**64 - 1], [])
    assert encode_one(np.array([True, False]), "BOOL") == ([True, False], [])
    assert encode_one(np.array([["a", "ü"]], dtype=object), "BYTES") == ([["a", "ü"]], [])
    assert encode_one(np.array([b"a", b"b"], dtype=object), "BYTES") == (["a", "b"], [])
    assert encode_one(np.array(["x"]), "BYTES") == (["x"], [])


def test_encode_renders_a_zipmap_as_a_list_of_dicts_with_string_keys():
    zipmap = [{0: 0.9, 1: 0.1}, {0: float("nan"), 1: 1.0}]
    value, warnings = encode_one(zipmap, None, kind="sequence")
    assert value == [{"0": 0.9, "1": 0.1}, {"0": None, "1": 1.0}]
    assert warnings == ["output 'y': 1 non-finite value rendered as null"]
    assert encode_one([{"setosa": 0.5}], None, kind="sequence") == ([{"setosa": 0.5}], [])


def test_encode_renders_sequences_and_maps():
    sequence = [np.array([1.0, 2.0], dtype=np.float32), np.array([[3]], dtype=np.int64)]
    assert encode_one(sequence, None, kind="sequence") == ([[1.0, 2.0], [[3]]], [])
    assert encode_one({"a": 1.5, "b": np.float32(2)}, None, kind="map") == ({"a": 1.5, "b": 2.0}, [])


def test_encode_keeps_output_order_and_names():
    rendered, warnings = encode_outputs(
        ["label", "probabilities"],
        [np.array([1], dtype=np.int64), [{0: 1.0}]],
        [{"name": "label", "datatype": "INT64"}, {"name": "probabilities", "datatype": None}],
    )
    assert list(rendered) == ["label", "probabilities"] and warnings == []


# --- tensor_digest ------------------------------------------------------------------------------


def test_digest_is_stable_for_equal_inputs():
    first = {"a": np.array([[1.0, 2.0]], dtype=np.float32), "b": np.array(["x", "y"], dtype=object)}
    second = {"b": np.array(["x", "y"], dtype=object), "a": np.array([[1.0, 2.0]], dtype=np.float32)}
    assert tensor_digest(first) == tensor_digest(second)
    assert len(tensor_digest(first)) == 64
    transposed = np.arange(6.0).reshape(2, 3).T  # not C-contiguous
    assert tensor_digest({"a": transposed}) == tensor_digest({"a": transposed.copy()})


def test_digest_changes_with_name_dtype_shape_and_value():
    base = {"a": np.array([[1, 2], [3, 4]], dtype=np.int32)}
    variants = [
        {"b": base["a"]},
        {"a": base["a"].astype(np.int64)},
        {"a": base["a"].astype(np.uint32)},
        {"a": base["a"].reshape(4)},
        {"a": base["a"].reshape(1, 4)},
        {"a": np.array([[1, 2], [3, 5]], dtype=np.int32)},
        {"a": base["a"], "b": np.array([], dtype=np.int32)},
    ]
    digests = {tensor_digest(base)} | {tensor_digest(variant) for variant in variants}
    assert len(digests) == len(variants) + 1


def test_digest_frames_string_elements():
    assert tensor_digest({"s": np.array(["ab", "c"], dtype=object)}) != tensor_digest(
        {"s": np.array(["a", "bc"], dtype=object)}
    )
    half = np.array([1.5], dtype=np.float16)
    assert tensor_digest({"x": half}) != tensor_digest({"x": half.view(ml_dtypes.bfloat16)})


# --- example_input ------------------------------------------------------------------------------


def test_example_input_round_trips_through_decode():
    schema = [tensor(datatype, [-1, 3], name=datatype) for datatype in [*NUMERIC_DTYPES, "BOOL", "BYTES"]]
    schema.append(tensor("FP32", None, name="any_rank"))
    schema.append(tensor("INT64", [2, -1, 2], name="fixed"))
    example = example_input(schema)
    assert example["FP32"] == [[0.0, 0.0, 0.0]]
    assert example["BOOL"] == [[False, False, False]]
    assert example["BYTES"] == [["", "", ""]]
    assert example["fixed"] == [[[0, 0]], [[0, 0]]]
    arrays = decode_inputs(orjson.loads(orjson.dumps(example)), schema, **LIMITS)
    assert arrays["fixed"].shape == (2, 1, 2) and arrays["any_rank"].shape == (1,)
    assert arrays["BF16"].dtype == ml_dtypes.bfloat16


def test_example_input_rejects_non_tensor_inputs():
    entry = {"name": NAME, "kind": "sequence", "datatype": None, "onnx_type": "seq(tensor(float))"}
    with rejected("unsupported_input_type"):
        example_input([entry])


# --- round trip -------------------------------------------------------------------------------


LARGE_BF16 = float(np.float32(3e38))  # below bfloat16's largest finite value, exact as a float32


@st.composite
def finite_arrays(draw, datatype: str) -> np.ndarray:
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    if datatype == "BF16":
        # hypothesis knows no bfloat16: draw float32 values within its range and round them.
        values = draw(hnp.arrays(np.float32, shape, elements=st.floats(-LARGE_BF16, LARGE_BF16, width=32)))
        return values.astype(ml_dtypes.bfloat16)
    dtype = np.dtype(NUMERIC_DTYPES[datatype])
    return draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)))


@pytest.mark.parametrize("datatype", NUMERIC_DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_finite_arrays_round_trip_through_json(datatype, data):
    array = data.draw(finite_arrays(datatype))
    schema = [tensor(datatype, [-1] * array.ndim)]
    body = orjson.dumps({NAME: array.tolist()})
    decoded = decode_inputs(parse_json_body(body, max_depth=8), schema, max_elements=1_000, max_depth=8)
    assert decoded[NAME].dtype == array.dtype
    np.testing.assert_array_equal(decoded[NAME], array)
    rendered, warnings = encode_outputs([NAME], [decoded[NAME]], schema)
    assert rendered[NAME] == array.tolist() and warnings == []
    assert tensor_digest(decoded) == tensor_digest({NAME: array.copy()})
