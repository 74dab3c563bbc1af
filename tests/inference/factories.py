"""Small ONNX models for the inference tests, built in code and returned as serialized bytes,
plus `reference_run`, which runs the same bytes with ONNX Runtime directly: the server's
answers are compared with it, never with numbers written into the tests.

Every model is valid ONNX (opset 17, IR 8 unless its docstring says otherwise). The iris and adder models come from
`tests.registry.onnx_factories`; the ones here cover the other input and output types.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, ValueInfoProto, helper

from tests.registry.onnx_factories import make_add_model, make_iris_model

__all__ = [
    "SPECIES",
    "float32",
    "make_add_model",
    "make_float8_input_model",
    "make_float16_model",
    "make_int64_model",
    "make_iris_model",
    "make_map_input_model",
    "make_nan_imputer_model",
    "make_scaled_model",
    "make_sequence_input_model",
    "make_string_model",
    "reference_run",
]

OPSET = 17
ML_OPSET = 3
IR_VERSION = 8

SPECIES = ("setosa", "versicolor", "virginica")


@cache
def make_int64_model() -> bytes:
    """Y = X * 3 + 1 on an INT64 input "X" ["batch", 2]; also S = the row sums (INT64 ["batch"])."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["X", "three"], ["tripled"]),
            helper.make_node("Add", ["tripled", "one"], ["Y"]),
            helper.make_node("ReduceSum", ["X", "axes"], ["S"], keepdims=0),
        ],
        "int64_graph",
        [_value("X", TensorProto.INT64, ["batch", 2])],
        [_value("Y", TensorProto.INT64, ["batch", 2]), _value("S", TensorProto.INT64, ["batch"])],
        initializer=[
            helper.make_tensor("three", TensorProto.INT64, [], [3]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    return _model(graph)


@cache
def make_string_model() -> bytes:
    """A string input "text" ["n"]: "label" is its index in SPECIES (-1 when unknown, by the
    ai.onnx.ml LabelEncoder) and "echo" the strings unchanged (a string output)."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["text"],
                ["label"],
                domain="ai.onnx.ml",
                keys_strings=list(SPECIES),
                values_int64s=list(range(len(SPECIES))),
                default_int64=-1,
            ),
            helper.make_node("Identity", ["text"], ["echo"]),
        ],
        "string_graph",
        [_value("text", TensorProto.STRING, ["n"])],
        [_value("label", TensorProto.INT64, ["n"]), _value("echo", TensorProto.STRING, ["n"])],
    )
    return _model(graph, ml=True)


@cache
def make_float16_model() -> bytes:
    """Y = float16(X) for a float32 "X" ["batch", 3]: a float16 output. Values beyond float16's
    range (65504) become infinity, which the API renders as null with a warning."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.FLOAT16)],
        "float16_graph",
        [_value("X", TensorProto.FLOAT, ["batch", 3])],
        [_value("Y", TensorProto.FLOAT16, ["batch", 3])],
    )
    return _model(graph)


@cache
def make_nan_imputer_model() -> bytes:
    """Y = X with every NaN replaced by -1 (IsNaN + Where), for float32 "X" ["batch", 3]: shows
    that a null sent to an allow_non_finite model reaches the graph as NaN."""
    graph = helper.make_graph(
        [
            helper.make_node("IsNaN", ["X"], ["missing"]),
            helper.make_node("Where", ["missing", "fill", "X"], ["Y"]),
        ],
        "imputer_graph",
        [_value("X", TensorProto.FLOAT, ["batch", 3])],
        [_value("Y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[helper.make_tensor("fill", TensorProto.FLOAT, [], [-1.0])],
    )
    return _model(graph)


@cache
def make_scaled_model(factor: float) -> bytes:
    """Y = X * factor for float32 "X" ["batch", 3]. Different factors give different files with
    the same interface: what a re-upload of a retrained model looks like."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "factor"], ["Y"])],
        "scaled_graph",
        [_value("X", TensorProto.FLOAT, ["batch", 3])],
        [_value("Y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])],
    )
    return _model(graph)


@cache
def make_sequence_input_model() -> bytes:
    """count = the length of "parts", a seq(tensor(float)) input: not a tensor."""
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["parts"], ["count"])],
        "sequence_graph",
        [helper.make_tensor_sequence_value_info("parts", TensorProto.FLOAT, None)],
        [_value("count", TensorProto.INT64, [])],
    )
    return _model(graph)


@cache
def make_map_input_model() -> bytes:
    """vector = DictVectorizer("features"), a map(string, float) input: not a tensor."""
    map_type = helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    graph = helper.make_graph(
        [
            helper.make_node(
                "DictVectorizer", ["features"], ["vector"], domain="ai.onnx.ml", string_vocabulary=["a", "b"]
            )
        ],
        "map_graph",
        [helper.make_value_info("features", map_type)],
        [_value("vector", TensorProto.FLOAT, ["batch", 2])],
    )
    return _model(graph, ml=True)


@cache
def make_float8_input_model() -> bytes:
    """y = float(x) for a float8 (E4M3FN) tensor "x": a tensor type JSON has no datatype for.
    Opset 19 and IR 9, where float8 appeared."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "float8_graph",
        [_value("x", TensorProto.FLOAT8E4M3FN, ["n"])],
        [_value("y", TensorProto.FLOAT, ["n"])],
    )
    return _model(graph, opset=19, ir_version=9)


def reference_run(data: bytes, feeds: dict[str, Any]) -> dict[str, Any]:
    """{output name: value} from ONNX Runtime itself on the same model bytes and inputs."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def float32(rows: Any) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


# --- building blocks ------------------------------------------------------------------------------


def _model(graph, *, ml: bool = False, opset: int = OPSET, ir_version: int = IR_VERSION) -> bytes:
    opsets = [helper.make_opsetid("", opset)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version).SerializeToString()


def _value(name: str, elem_type: int, shape: Sequence[int | str]) -> ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))
