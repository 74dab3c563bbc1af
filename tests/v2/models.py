"""Models and test data for the /v2 tests, built in code or read from the onnx package.

`backend_cases()` lists the onnx package's own test-data models (folders `pytorch-converted`
and `simple`) that ONNX Runtime itself runs on this machine and matches the expected outputs
for; the conformance tests send the same inputs through tritonclient and compare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tests.inference.factories import IR_VERSION, OPSET

BACKEND_FOLDERS = ("pytorch-converted", "simple")
RTOL, ATOL = 1e-3, 1e-5


def make_bool_model() -> bytes:
    """BOOL inputs "A" and "B" ["batch", 3]: "both" = A and B, "neither" = not (A or B)."""
    graph = helper.make_graph(
        [
            helper.make_node("And", ["A", "B"], ["both"]),
            helper.make_node("Or", ["A", "B"], ["either"]),
            helper.make_node("Not", ["either"], ["neither"]),
        ],
        "bool_graph",
        [
            helper.make_tensor_value_info("A", TensorProto.BOOL, ["batch", 3]),
            helper.make_tensor_value_info("B", TensorProto.BOOL, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("both", TensorProto.BOOL, ["batch", 3]),
            helper.make_tensor_value_info("neither", TensorProto.BOOL, ["batch", 3]),
        ],
    )
    return _serialize(graph)


def make_two_input_model() -> bytes:
    """FP32 "X" ["batch", 2] and INT64 "K" ["batch"]: "Y" = X * 2, "total" = sum of K (INT64 [])."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["X", "two"], ["Y"]),
            helper.make_node("ReduceSum", ["K"], ["total"], keepdims=0),
        ],
        "two_input_graph",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("K", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("total", TensorProto.INT64, []),
        ],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    return _serialize(graph)


def _serialize(graph) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()


@dataclass(frozen=True)
class BackendCase:
    """One test-data model: its registry name, file and first test data set."""

    name: str
    model_path: Path
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def id(self) -> str:
        return self.name


def backend_root() -> Path:
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"


@cache
def backend_cases() -> tuple[BackendCase, ...]:
    """Every model in BACKEND_FOLDERS that ONNX Runtime loads and runs, matching the expected
    outputs of each of its data sets (those it cannot run here are no part of the claim)."""
    cases = []
    for folder in BACKEND_FOLDERS:
        for directory in sorted((backend_root() / folder).iterdir()):
            case = _case(folder, directory)
            if case is not None:
                cases.append(case)
    return tuple(cases)


def _case(folder: str, directory: Path) -> BackendCase | None:
    model_path = directory / "model.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception:  # an operator ONNX Runtime lacks, a locale this machine lacks, ...
        return None
    input_names = [node.name for node in session.get_inputs()]
    output_names = [node.name for node in session.get_outputs()]
    data_sets = sorted(directory.glob("test_data_set_*"))
    first = None
    for data_set in data_sets:
        inputs = _tensors(sorted(data_set.glob("input_*.pb")), input_names)
        outputs = _tensors(sorted(data_set.glob("output_*.pb")), output_names)
        if inputs is None or outputs is None:
            return None
        try:
            results = session.run(list(outputs), inputs)
        except Exception:
            return None
        if not all(_matches(result, outputs[name]) for name, result in zip(outputs, results, strict=True)):
            return None
        first = first or (inputs, outputs)
    if first is None:
        return None
    return BackendCase(f"{folder}.{directory.name}", model_path, *first)


def _tensors(paths: list[Path], names: list[str]) -> dict[str, np.ndarray] | None:
    tensors = {}
    for index, path in enumerate(paths):
        proto = TensorProto()
        try:
            proto.ParseFromString(path.read_bytes())
        except Exception:
            return None
        if not proto.data_type:  # a sequence, map or optional: not a tensor
            return None
        tensors[proto.name or names[index]] = numpy_helper.to_array(proto)
    return tensors


def _matches(result: np.ndarray, expected: np.ndarray) -> bool:
    if result.shape != expected.shape:
        return False
    if expected.dtype.kind in "OSU":
        return [str(x) for x in result.reshape(-1)] == [
            x.decode() if isinstance(x, bytes) else str(x) for x in expected.reshape(-1)
        ]
    if expected.dtype.kind == "f":
        return np.allclose(result, expected, rtol=RTOL, atol=ATOL, equal_nan=True)
    return np.array_equal(result, expected)
