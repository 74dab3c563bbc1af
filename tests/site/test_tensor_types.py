"""The datatype table (core.tensor_types) against ONNX: model inspection finds each datatype
by ONNX's element type name, so a misspelt name would quietly make a datatype unservable."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from core.tensor_types import TABLE, is_supported
from registry.onnx_inspect import inspect_model


def identity_model(elem_type: int) -> bytes:
    value = helper.make_tensor_value_info("x", elem_type, [-1, 2])
    result = helper.make_tensor_value_info("y", elem_type, [-1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [result])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("row", TABLE, ids=[row.datatype for row in TABLE])
def test_inspection_gives_every_onnx_element_type_its_datatype(row):
    elem_type = TensorProto.DataType.Value(row.onnx.upper())
    report = inspect_model(identity_model(elem_type))
    (entry,) = report["input_schema"]
    assert entry["datatype"] == row.datatype
    assert entry["onnx_type"] == f"tensor({row.onnx})"
    assert is_supported(entry)
    assert helper.tensor_dtype_to_np_dtype(elem_type) == row.dtype


def test_only_tensors_of_a_datatype_in_the_table_are_supported():
    assert is_supported({"name": "x", "kind": "tensor", "datatype": "FP32"})
    assert not is_supported({"name": "x", "kind": "tensor", "datatype": None})  # e.g. tensor(float8e4m3fn)
    assert not is_supported({"name": "s", "kind": "sequence", "datatype": None})
