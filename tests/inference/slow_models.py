"""A model that is slow on purpose, for the inference timeout and in-flight tests.

`make_sleepy_model` echoes "X" float32 ["batch", 4] as "Y", after a Loop whose trip count is
the sum of X times ``iterations_per_unit``; each iteration multiplies a 64 x 64 matrix. Zeros
(what validation and the session warm-up run) cost nothing, so the model registers and loads
at once, and a request chooses how long its own run takes: [[1, 1, 1, 1]] at the default means
4 million iterations, minutes of work, unless the run is stopped.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from onnx import TensorProto, helper, numpy_helper

SIZE = 64


@cache
def make_sleepy_model(iterations_per_unit: int = 1_000_000) -> bytes:
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "U"], ["h_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [SIZE, SIZE]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [SIZE, SIZE]),
        ],
    )
    nodes = [
        helper.make_node("ReduceSum", ["X"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "per_unit"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "U"], ["spun"], body=body),
        helper.make_node("ReduceMean", ["spun"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("Add", ["X", "nothing"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sleepy",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            helper.make_tensor("per_unit", TensorProto.FLOAT, [], [float(iterations_per_unit)]),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            numpy_helper.from_array(np.full((SIZE, SIZE), 1.0 / SIZE, dtype=np.float32), "U"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()
