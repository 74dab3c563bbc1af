"""Models, input files and reference results for the job tests, all built in code.

`reference_outputs` runs the same model bytes with ONNX Runtime directly: a job's output file
is compared with it, never with numbers written into the tests.
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from onnx import TensorProto, helper

from tests.registry.onnx_factories import make_add_model, make_iris_model

__all__ = [
    "csv_bytes",
    "iris_model",
    "iris_rows",
    "jsonl_bytes",
    "make_add_model",
    "npy_bytes",
    "reference_outputs",
    "slow_model",
    "uploaded_input",
]


def iris_model() -> bytes:
    """scikit-learn's iris classifier: "X" float32 [None, 4] -> "label" [None], "probabilities" [None, 3]."""
    return make_iris_model(zipmap=False)


@cache
def slow_model(matmuls: int = 3, size: int = 1024) -> bytes:
    """Y = X @ W for "X" float32 ["batch", 4] (Y ["batch", 3]), plus busy work whose cost does not
    depend on the batch: the mean of X broadcast to [size, size] and multiplied ``matmuls``
    times by a constant matrix (about 35 ms per product at 1024 on one core), then added to Y
    times zero. Every session run takes about the same time, so a job's length is set by its
    number of chunks. The busy part depends on the input, so ONNX Runtime cannot fold it away.
    """
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["linear"]),
        helper.make_node("ReduceMean", ["X"], ["mean"], keepdims=0),
        helper.make_node("Expand", ["mean", "square"], ["h0"]),
        helper.make_node(
            "ConstantOfShape",
            ["square"],
            ["U"],
            value=helper.make_tensor("u", TensorProto.FLOAT, [1], [1.0 / size]),
        ),
    ]
    for index in range(matmuls):
        nodes.append(helper.make_node("MatMul", [f"h{index}", "U"], [f"h{index + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"h{matmuls}"], ["busy"], keepdims=0),
        helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
        helper.make_node("Add", ["linear", "nothing"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [4, 3], (np.arange(12, dtype=np.float32) / 10).tolist()),
            helper.make_tensor("square", TensorProto.INT64, [2], [size, size]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def iris_rows(count: int, *, seed: int = 0) -> np.ndarray:
    """``count`` plausible iris measurements (float32 [count, 4])."""
    rng = np.random.default_rng(seed)
    low = np.array([4.3, 2.0, 1.0, 0.1], dtype=np.float32)
    high = np.array([7.9, 4.4, 6.9, 2.5], dtype=np.float32)
    return np.round(rng.uniform(low, high, size=(count, 4)), 2).astype(np.float32)


def jsonl_bytes(rows: np.ndarray, *, name: str = "X") -> bytes:
    return b"".join(orjson.dumps({name: row.tolist()}) + b"\n" for row in rows)


def csv_bytes(rows: np.ndarray, *, header: bool = True) -> bytes:
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))] if header else []
    lines += [",".join(repr(float(value)) for value in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def npy_bytes(array: Any, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def uploaded_input(content: bytes, name: str = "rows.jsonl"):
    """An input file as the job upload handler leaves it: a temporary file beside the job folders."""
    from jobs.uploads import JobInputFile

    upload = JobInputFile(name, "application/octet-stream", len(content), None)
    upload.write(content)
    upload.flush()
    upload.size = len(content)
    return upload


def reference_outputs(data: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{output name: array} from ONNX Runtime itself, on the same model bytes and inputs."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))
