"""Models whose memory use is set by the values of their inputs, and look-alikes that are not.

A few hundred bytes each. Given small numbers they answer small tensors; given large ones they
ask ONNX Runtime for as much memory as the numbers say (`BOMB_*`: tens of gigabytes), which only
an isolated, memory-capped process may ever try. Valid ONNX, opset 17, IR 8.
"""

from __future__ import annotations

from functools import cache

from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8

# Inputs that ask for far more than any test limit: 4 * 100_000 * 100_000 bytes = 40 GB.
BOMB_SHAPE = [100_000, 100_000]


@cache
def make_constant_of_shape_model() -> bytes:
    """Y (float32, filled with 1.0) = ConstantOfShape(shape), ``shape`` an int64 vector input."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape", ["shape"], ["Y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1])
            )
        ],
        "constant_of_shape",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["rows", "cols"])],
    )
    return _model(graph)


@cache
def make_expand_model() -> bytes:
    """Y = Expand(X, shape): X float32 [1, 1] broadcast to the int64 ``shape`` input."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["X", "shape"], ["Y"])],
        "expand",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["rows", "cols"])],
    )
    return _model(graph)


@cache
def make_tile_model() -> bytes:
    """Y = Tile(X, repeats): X float32 [1, 1] repeated by the int64 ``repeats`` input."""
    graph = helper.make_graph(
        [helper.make_node("Tile", ["X", "repeats"], ["Y"])],
        "tile",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("repeats", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["rows", "cols"])],
    )
    return _model(graph)


@cache
def make_range_model() -> bytes:
    """Y = Range(0, Cast(limit[0]) , 1): float ``limit`` [1] rounded to int64, through a Cast
    and a Squeeze, so the size-setting value is computed from the input, not the input itself."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["limit"], ["limit_int"], to=TensorProto.INT64),
            helper.make_node("Squeeze", ["limit_int"], ["limit_scalar"]),
            helper.make_node("Range", ["zero", "limit_scalar", "one"], ["Y"]),
        ],
        "range",
        [helper.make_tensor_value_info("limit", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.INT64, ["n"])],
        initializer=[
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
        ],
    )
    return _model(graph)


@cache
def make_constant_of_shape_in_branch_model() -> bytes:
    """ConstantOfShape(shape) inside the ``then`` branch of an If: the tracer must walk
    subgraphs and see the outer-scope input from there."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1])
    then_branch = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill)],
        "then",
        [],
        [helper.make_tensor_value_info("big", TensorProto.FLOAT, ["rows", "cols"])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["small_shape"], ["small"], value=fill)],
        "else",
        [],
        [helper.make_tensor_value_info("small", TensorProto.FLOAT, ["rows", "cols"])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["yes"], ["Y"], then_branch=then_branch, else_branch=else_branch)],
        "branch",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["rows", "cols"])],
        initializer=[
            helper.make_tensor("yes", TensorProto.BOOL, [], [True]),
            helper.make_tensor("small_shape", TensorProto.INT64, [2], [1, 1]),
        ],
    )
    return _model(graph)


@cache
def make_mask_like_model() -> bytes:
    """Y = ConstantOfShape(Shape(X)) + X: allocation sized by the input's shape, not its values
    (how transformer exports build masks). Not flagged: it grows only with the request's size."""
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["X"], ["shape"]),
            helper.make_node(
                "ConstantOfShape", ["shape"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1])
            ),
            helper.make_node("Add", ["ones", "X"], ["Y"]),
        ],
        "mask_like",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
    )
    return _model(graph)


def _model(graph) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()
