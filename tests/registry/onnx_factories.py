"""Small ONNX models built in code, returned as serialized bytes.

Each factory builds one model that a test needs: valid ones to serve, and hostile or broken
ones that validation must reject. Every model is otherwise valid ONNX (opset 17, IR 8) unless
its docstring says so, so that a rejection can only come from the property under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Literal

from onnx import (
    FunctionProto,
    GraphProto,
    ModelProto,
    NodeProto,
    OperatorSetIdProto,
    SparseTensorProto,
    TensorProto,
    ValueInfoProto,
    helper,
)

OPSET = 17
IR_VERSION = 8

ExternalDataSite = Literal[
    "initializer",
    "constant_attr",
    "subgraph",
    "loop_body",
    "nested_subgraph",
    "sparse",
    "sparse_constant_attr",
    "function",
]
EXTERNAL_DATA_SITES: tuple[ExternalDataSite, ...] = (
    "initializer",
    "constant_attr",
    "subgraph",
    "loop_body",
    "nested_subgraph",
    "sparse",
    "sparse_constant_attr",
    "function",
)

CustomOpSite = Literal["graph", "subgraph", "function"]

_WEIGHTS = [1.0, 2.0, 3.0]


def make_add_model() -> bytes:
    """Z = X + Y on float32 tensors of shape ["batch", 3], with two metadata props."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "Y"], ["Z"], name="add")],
        "add_graph",
        [_float_input("X", ["batch", 3]), _float_input("Y", ["batch", 3])],
        [_float_input("Z", ["batch", 3])],
    )
    model = _model(graph, producer_name="modelforge-tests", producer_version="1.0", doc_string="Adds two tensors.")
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    return model.SerializeToString()


def make_iris_model(*, zipmap: bool = True) -> bytes:
    """scikit-learn LogisticRegression on iris via skl2onnx: input "X" float32 [None, 4].

    With ZipMap the probabilities come out as seq(map(int64, tensor(float))), as skl2onnx
    writes by default; without it, as a float32 [None, 3] tensor.
    """
    return _iris_model(zipmap)


@cache
def _iris_model(zipmap: bool) -> bytes:
    # Imported here: fitting and converting takes a moment, and most tests never need it.
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    classifier = LogisticRegression(max_iter=500).fit(features, labels)
    model = convert_sklearn(
        classifier,
        "iris",
        initial_types=[("X", FloatTensorType([None, 4]))],
        options={id(classifier): {"zipmap": zipmap}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    return model.SerializeToString()


def make_external_data_model(location: str, *, on: ExternalDataSite = "initializer") -> bytes:
    """Z = X + W, where W's data is declared to live in the external file ``location``.

    ``on`` picks where the external tensor hides: a graph initializer, a Constant node's
    attribute, an If branch, a Loop body, an If inside a Loop body, a sparse initializer's
    values, a Constant node's sparse_value, or a model-local function's body.
    """
    return _weights_model(_external_tensor("W", location), on=on)


def make_embedded_data_model(*, on: ExternalDataSite = "initializer") -> bytes:
    """The same model as `make_external_data_model`, with W's data inside the file.

    Valid for every site but "sparse": no standard operator accepts a sparse tensor, so the
    ONNX checker rejects a graph that feeds a sparse initializer to one, embedded or not.
    """
    return _weights_model(helper.make_tensor("W", TensorProto.FLOAT, [3], _WEIGHTS), on=on)


def make_custom_domain_model(domain: str = "com.example.custom", *, where: CustomOpSite = "graph") -> bytes:
    """A node running operator "Frobnicate" from ``domain``, which no runtime ships.

    ``where``: in the main graph, inside an If branch, or inside a model-local function body.
    """
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(domain, 1)]
    functions: list[FunctionProto] = []
    if where == "graph":
        nodes = [helper.make_node("Frobnicate", ["X"], ["Z"], domain=domain)]
    elif where == "subgraph":
        custom = helper.make_node("Frobnicate", ["X"], ["Z_then"], domain=domain)
        then_branch = helper.make_graph([custom], "then", [], [_float_input("Z_then", ["batch", 3])])
        identity = helper.make_node("Identity", ["X"], ["Z_else"])
        else_branch = helper.make_graph([identity], "else", [], [_float_input("Z_else", ["batch", 3])])
        nodes = [_constant("cond", helper.make_tensor("cond", TensorProto.BOOL, [], [True]))]
        nodes.append(helper.make_node("If", ["cond"], ["Z"], then_branch=then_branch, else_branch=else_branch))
    else:
        body = [helper.make_node("Frobnicate", ["x"], ["z"], domain=domain)]
        functions.append(helper.make_function("local.functions", "Wrapper", ["x"], ["z"], body, opsets))
        nodes = [helper.make_node("Wrapper", ["X"], ["Z"], domain="local.functions")]
        opsets.append(helper.make_opsetid("local.functions", 1))
    graph = helper.make_graph(
        nodes, "custom_graph", [_float_input("X", ["batch", 3])], [_float_input("Z", ["batch", 3])]
    )
    return _model(graph, opsets=opsets, functions=functions).SerializeToString()


def make_local_function_model() -> bytes:
    """Z = Double(X), where "local.functions:Double" is a function defined in the model itself."""
    body = [helper.make_node("Add", ["x", "x"], ["z"])]
    function = helper.make_function("local.functions", "Double", ["x"], ["z"], body, [helper.make_opsetid("", OPSET)])
    graph = helper.make_graph(
        [helper.make_node("Double", ["X"], ["Z"], domain="local.functions")],
        "function_graph",
        [_float_input("X", ["batch", 3])],
        [_float_input("Z", ["batch", 3])],
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("local.functions", 1)]
    return _model(graph, opsets=opsets, functions=[function]).SerializeToString()


def make_undefined_input_model() -> bytes:
    """Invalid: the Add node reads "missing", which no input, initializer or node defines."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "missing"], ["Z"])],
        "broken_graph",
        [_float_input("X", ["batch", 3])],
        [_float_input("Z", ["batch", 3])],
    )
    return _model(graph).SerializeToString()


def make_old_ir_model() -> bytes:
    """IR 3 / opset 8 style: the initializer W is listed among the graph inputs as well."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "W"], ["Z"])],
        "old_graph",
        [_float_input("X", ["batch", 3]), _float_input("W", [3])],
        [_float_input("Z", ["batch", 3])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [3], _WEIGHTS)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], ir_version=3)
    return model.SerializeToString()


def make_unsupported_opset_model() -> bytes:
    """Valid ONNX that ONNX Runtime refuses to load: Add at opset 6, which it no longer implements."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "Y"], ["Z"])],
        "opset6_graph",
        [_float_input("X", [1, 3]), _float_input("Y", [1, 3])],
        [_float_input("Z", [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3).SerializeToString()


def make_reshape_to_four_model() -> bytes:
    """Loads, but fails on dummy inputs: X ["n"] is reshaped to [2, 2], which needs n = 4."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["X", "shape"], ["Y"])],
        "reshape_graph",
        [_float_input("X", ["n"])],
        [_float_input("Y", [2, 2])],
        initializer=[shape],
    )
    return _model(graph).SerializeToString()


def make_constant_of_shape_bomb(shape: Sequence[int] = (100_000, 100_000, 10)) -> bytes:
    """A few hundred bytes whose output is a float32 tensor of ``shape`` filled with ones.

    The default asks ONNX Runtime for 4 * 10**11 bytes (400 GB) when it runs. ONNX Runtime
    does not constant-fold it, so loading succeeds and the allocation happens on the first run.
    """
    target = helper.make_tensor("target_shape", TensorProto.INT64, [len(shape)], list(shape))
    graph = helper.make_graph(
        [
            helper.make_node(
                "ConstantOfShape",
                ["target_shape"],
                ["Y"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            )
        ],
        "bomb_graph",
        [],
        [_float_input("Y", list(shape))],
        initializer=[target],
    )
    return _model(graph).SerializeToString()


def make_busy_loop_model(iterations: int = 10**10) -> bytes:
    """Y = 0 + 1 + 1 + ... (``iterations`` Loop steps): loads instantly, then computes for hours."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            _constant("one", helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
            helper.make_node("Add", ["total_in", "one"], ["total_out"]),
        ],
        "busy_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("total_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("total_out", TensorProto.FLOAT, []),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip_count", "keep_going", "start"], ["Y"], body=body)],
        "busy_graph",
        [],
        [_float_input("Y", [])],
        initializer=[
            helper.make_tensor("trip_count", TensorProto.INT64, [], [iterations]),
            helper.make_tensor("keep_going", TensorProto.BOOL, [], [True]),
            helper.make_tensor("start", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    return _model(graph).SerializeToString()


# --- building blocks ------------------------------------------------------------------------------


def _model(
    graph: GraphProto,
    *,
    opsets: Sequence[OperatorSetIdProto] | None = None,
    functions: Sequence[FunctionProto] = (),
    **fields: object,
) -> ModelProto:
    return helper.make_model(
        graph,
        opset_imports=list(opsets) if opsets is not None else [helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        functions=list(functions),
        **fields,
    )


def _float_input(name: str, shape: Sequence[int | str]) -> ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _constant(output: str, value: TensorProto) -> NodeProto:
    return helper.make_node("Constant", [], [output], value=value)


def _external_tensor(name: str, location: str) -> TensorProto:
    """A float32 [3] tensor whose 12 bytes are declared to live at ``location``."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[3])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _weights_model(weights: TensorProto, *, on: ExternalDataSite) -> bytes:
    """Z = X + W for X ["batch", 3], with W (float32 [3]) produced from ``weights`` at site ``on``."""
    initializers: list[TensorProto] = []
    sparse_initializers: list[SparseTensorProto] = []
    functions: list[FunctionProto] = []
    opsets = [helper.make_opsetid("", OPSET)]
    nodes: list[NodeProto] = []

    if on == "initializer":
        initializers.append(weights)
    elif on == "constant_attr":
        nodes.append(_constant("W", weights))
    elif on == "subgraph":
        nodes += _if_node("W", weights)
    elif on == "loop_body":
        nodes += _loop_once("W", [_constant("step", weights)])
    elif on == "nested_subgraph":
        nodes += _loop_once("W", _if_node("step", weights))
    elif on == "sparse":
        indices = helper.make_tensor("W_indices", TensorProto.INT64, [3], [0, 1, 2])
        sparse_initializers.append(helper.make_sparse_tensor(weights, indices, [3]))
    elif on == "sparse_constant_attr":
        indices = helper.make_tensor("W_indices", TensorProto.INT64, [3], [0, 1, 2])
        sparse = helper.make_sparse_tensor(weights, indices, [3])
        nodes.append(helper.make_node("Constant", [], ["W"], sparse_value=sparse))
    elif on == "function":
        functions.append(
            helper.make_function("local.functions", "Weights", [], ["W"], [_constant("W", weights)], opsets)
        )
        nodes.append(helper.make_node("Weights", [], ["W"], domain="local.functions"))
        opsets = [*opsets, helper.make_opsetid("local.functions", 1)]
    else:
        raise ValueError(f"unknown site {on!r}")

    nodes.append(helper.make_node("Add", ["X", "W"], ["Z"]))
    graph = helper.make_graph(
        nodes,
        "weights_graph",
        [_float_input("X", ["batch", 3])],
        [_float_input("Z", ["batch", 3])],
        initializer=initializers,
        sparse_initializer=sparse_initializers,
    )
    return _model(graph, opsets=opsets, functions=functions).SerializeToString()


def _if_node(output: str, then_value: TensorProto) -> list[NodeProto]:
    """Nodes computing ``output`` with an If whose then-branch is the constant ``then_value``."""
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    then_branch = helper.make_graph(
        [_constant(f"{output}_then", then_value)], "then", [], [_float_input(f"{output}_then", [3])]
    )
    else_branch = helper.make_graph(
        [_constant(f"{output}_else", zeros)], "else", [], [_float_input(f"{output}_else", [3])]
    )
    condition = _constant(f"{output}_cond", helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
    branch = helper.make_node("If", [f"{output}_cond"], [output], then_branch=then_branch, else_branch=else_branch)
    return [condition, branch]


def _loop_once(output: str, step_nodes: list[NodeProto]) -> list[NodeProto]:
    """Nodes computing ``output`` = zeros + step with a one-iteration Loop; ``step_nodes`` make "step"."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            *step_nodes,
            helper.make_node("Add", ["total_in", "step"], ["total_out"]),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            _float_input("total_in", [3]),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _float_input("total_out", [3])],
    )
    return [
        _constant(f"{output}_trips", helper.make_tensor("trips", TensorProto.INT64, [], [1])),
        _constant(f"{output}_go", helper.make_tensor("go", TensorProto.BOOL, [], [True])),
        _constant(f"{output}_start", helper.make_tensor("start", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])),
        helper.make_node("Loop", [f"{output}_trips", f"{output}_go", f"{output}_start"], [output], body=body),
    ]
