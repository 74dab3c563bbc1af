"""Inspect an uploaded ONNX model without trusting it: bytes in, report out.

`inspect_model` turns the bytes of a model file into a JSON-serialisable report (input and
output schema, metadata, warnings) or raises `ModelRejected` with a stable ``code``:

``invalid_model``            not an ONNX model, or one the ONNX checker or our caps reject
``external_data_forbidden``  a tensor keeps its data outside the file (path traversal, ORT's
                             in-memory marker); only self-contained single-file models are served
``custom_op_forbidden``      a node needs an operator library we do not ship
``runtime_load_failed``      ONNX Runtime cannot create a session for the model
``resource_limit_exceeded``  memory ran out while loading or test-running the model

A model that passes may still allocate by input value: an operator whose output size comes from
the values of a runtime tensor (ConstantOfShape, Expand, Tile, Range, Resize, Pad, OneHot, a
Loop's trip count, ...) fed from the request. A run on zeros cannot see that, so the graph is
traced instead (`value_sized_allocations`); the report's ``value_dependent_memory`` says whether
any such operator exists, and the server then runs the model only in a memory-capped process.

The module is pure (no Django, no file paths, no global state) but not safe to call on untrusted
bytes in the web process: a hostile model can still crash ONNX Runtime or make it allocate
without bound. `registry.sandbox` runs it in a child process through the command-line entry at
the bottom of this file, which applies memory and CPU limits first.

onnx, onnxruntime and numpy (and `core.tensor_types`, the datatype table, which loads numpy) are
imported inside the functions that need them, never at module level: the command-line entry
must set its resource limits before those libraries load (they map memory and start threads
at import), and Django importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from onnx import (
        AttributeProto,
        GraphProto,
        ModelProto,
        NodeProto,
        TensorProto,
        TensorShapeProto,
        TypeProto,
    )
    from onnxruntime import InferenceSession

DEFAULT_MAX_DIMENSION = 2**31

# Operator domains ONNX Runtime implements natively. Anything else needs a custom operator
# library, i.e. native code we would have to load on the model author's behalf.
ALLOWED_OP_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft"})

# ONNX Runtime reads tensor data from a raw memory address when an external-data location
# contains this marker (onnxruntime #28709). Any external data is rejected; this marker gets
# its own message so the reason is plain in logs.
ORT_MEMORY_MARKER = "_ORT_MEM_ADDR_"

# Dummy inputs bigger than this are not built: a fixed dimension of 10**9 is legal, and zeros
# for it would exhaust the sandbox's memory for a reason that is ours, not the model's.
_DUMMY_INPUT_BUDGET_BYTES = 64 * 2**20

# Phrases ONNX Runtime, protobuf and the C++ runtime use when an allocation fails.
_OUT_OF_MEMORY_PHRASES = (
    "bad_alloc",
    "bad allocation",
    "failed to allocate memory",
    "cannot allocate memory",
    "out of memory",
)


class ModelRejected(Exception):
    """The model cannot be served. ``code`` is stable for clients; ``detail`` is for humans."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def inspect_model(data: bytes, *, max_dimension: int = DEFAULT_MAX_DIMENSION) -> dict[str, Any]:
    """Validate a serialized ONNX model and describe its interface.

    Checks run cheapest and most dangerous first, so that nothing reaches ONNX Runtime
    before the protobuf has been searched for external data and custom operators:
    structure, external data, operator domains, the ONNX checker, dimension caps, an ONNX
    Runtime session (CPU, one thread), and finally one run with dummy inputs. A failed
    dummy run is only a warning (zeros are not valid input for every model), unless it
    ran out of memory.

    Returns ``{"input_schema", "output_schema", "model_metadata", "warnings"}``; each schema
    entry is ``{"name", "datatype", "onnx_type", "shape", "dim_names", "kind"}``.
    Raises `ModelRejected`.
    """
    try:
        return _inspect(data, max_dimension=max_dimension)
    except MemoryError as exc:
        raise _out_of_memory("while inspecting the model", exc) from exc


def _inspect(data: bytes, *, max_dimension: int) -> dict[str, Any]:
    model = _parse(data)
    _reject_external_data(model)
    _reject_custom_ops(model)
    _run_checker(data)
    _reject_oversized_dimensions(model, max_dimension=max_dimension)

    warnings: list[str] = []
    initializer_names = {t.name for t in model.graph.initializer} | {
        s.values.name for s in model.graph.sparse_initializer
    }
    # IR < 4 models list every initializer as a graph input too; those are weights, not inputs.
    inputs = [vi for vi in model.graph.input if vi.name not in initializer_names]
    input_schema = [_describe_value(vi.name, vi.type, "Input", warnings) for vi in inputs]
    output_schema = [_describe_value(vi.name, vi.type, "Output", warnings) for vi in model.graph.output]

    findings = value_sized_allocations(model)
    if findings:
        shown = "; ".join(findings[:5]) + (f"; and {len(findings) - 5} more" if len(findings) > 5 else "")
        warnings.append(
            f"The model allocates memory by input values ({shown}). It is served only in an isolated "
            "process under the per-model memory limit; a request that needs more is refused with "
            "resource_limit_exceeded."
        )

    session = _create_session(data)
    warnings.extend(_test_run(session))
    return {
        "input_schema": input_schema,
        "output_schema": output_schema,
        "model_metadata": _describe_metadata(model),
        "warnings": warnings,
        "value_dependent_memory": bool(findings),
    }


# --- structure ------------------------------------------------------------------------------


def _parse(data: bytes) -> ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    if not data:
        raise ModelRejected("invalid_model", "The file is empty. Upload a .onnx model file.")
    try:
        # Deserialises only: unlike onnx.load(path), nothing here follows external-data paths.
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as exc:
        raise ModelRejected(
            "invalid_model",
            f"The file is not a readable ONNX model (protobuf decoding failed: {exc}). It may "
            "be truncated or in another format; export the model again with onnx.save_model.",
        ) from exc
    if not model.HasField("graph"):
        raise ModelRejected(
            "invalid_model",
            "The file parses as protobuf but contains no ONNX graph, so it is probably not an "
            "ONNX model. Upload the .onnx file written by your exporter.",
        )
    if not model.graph.node and not model.graph.output:
        raise ModelRejected(
            "invalid_model",
            "The model's graph has no nodes and no outputs, so there is nothing to serve. "
            "Check that the exporter wrote the whole model.",
        )
    return model


def _run_checker(data: bytes) -> None:
    import onnx

    try:
        # Given the bytes rather than the parsed model, the checker skips re-serialising it.
        onnx.checker.check_model(data, full_check=True)
    except Exception as exc:
        # The checker raises ValidationError, shape inference InferenceError, and the C++
        # bindings a few others; every one of them means the graph is not valid ONNX.
        if _is_out_of_memory(exc):
            raise _out_of_memory("in the ONNX checker", exc) from exc
        raise ModelRejected(
            "invalid_model",
            f"The ONNX checker rejected the model: {_message(exc)}. Fix the graph (run "
            "onnx.checker.check_model(model, full_check=True) locally) and upload it again.",
        ) from exc


def _reject_oversized_dimensions(model: ModelProto, *, max_dimension: int) -> None:
    declared: list[tuple[str, Iterable[int]]] = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        declared.extend((f"graph {kind} '{vi.name}'", _declared_dims(vi.type)) for vi in values)
    declared.extend((f"tensor '{tensor.name}' ({where})", tensor.dims) for tensor, where in _iter_tensors(model))
    for graph, where in _iter_graphs(model):
        declared.extend((f"sparse initializer '{s.values.name}' ({where})", s.dims) for s in graph.sparse_initializer)
    for what, dims in declared:
        for dim in dims:
            if dim > max_dimension:
                raise ModelRejected(
                    "invalid_model",
                    f"The {what} declares a dimension of {dim}, above the limit of "
                    f"{max_dimension}. Use a symbolic dimension for variable sizes.",
                )


def _declared_dims(type_proto: TypeProto) -> Iterator[int]:
    """Fixed dimensions of every tensor shape inside a (possibly nested) type."""
    which = type_proto.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        tensor_type = getattr(type_proto, which)
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                yield dim.dim_value
    elif which == "sequence_type":
        yield from _declared_dims(type_proto.sequence_type.elem_type)
    elif which == "map_type":
        yield from _declared_dims(type_proto.map_type.value_type)
    elif which == "optional_type":
        yield from _declared_dims(type_proto.optional_type.elem_type)


# --- walking every graph, node and tensor -------------------------------------------------------
#
# Tensors and nodes hide in many places: graph initializers, sparse initializers, node
# attributes, subgraphs of If/Loop/Scan (to any depth), model-local function bodies and their
# attribute defaults, and training graphs. The checks below must see all of them, so they go
# through these walkers rather than model.graph.


def _iter_graphs(model: ModelProto) -> Iterator[tuple[GraphProto, str]]:
    """Every graph in the model, nested ones included, with a description of where it is."""
    yield from _walk_graph(model.graph, f"main graph '{model.graph.name}'")
    for index, training in enumerate(model.training_info):
        yield from _walk_graph(training.initialization, f"training_info[{index}] initialization")
        yield from _walk_graph(training.algorithm, f"training_info[{index}] algorithm")
    for function in model.functions:
        where = _function_label(function.domain, function.name)
        for attr in function.attribute_proto:
            for graph, graph_where in _attribute_graphs(attr, f"{where} attribute default"):
                yield from _walk_graph(graph, graph_where)
        for node in function.node:
            for graph, graph_where in _node_graphs(node, where):
                yield from _walk_graph(graph, graph_where)


def _walk_graph(graph: GraphProto, where: str) -> Iterator[tuple[GraphProto, str]]:
    # Recursion depth is bounded by protobuf's own nesting limit on parsed messages.
    yield graph, where
    for node in graph.node:
        for subgraph, sub_where in _node_graphs(node, where):
            yield from _walk_graph(subgraph, sub_where)


def _node_graphs(node: NodeProto, where: str) -> Iterator[tuple[GraphProto, str]]:
    for attr in node.attribute:
        yield from _attribute_graphs(attr, f"{where} > {_node_label(node)}")


def _attribute_graphs(attr: AttributeProto, where: str) -> Iterator[tuple[GraphProto, str]]:
    # Every field is searched whatever attr.type claims: a runtime may not check the type.
    if attr.HasField("g"):
        yield attr.g, f"{where} attribute '{attr.name}' > graph '{attr.g.name}'"
    for index, graph in enumerate(attr.graphs):
        yield graph, f"{where} attribute '{attr.name}'[{index}] > graph '{graph.name}'"


def _iter_nodes(model: ModelProto) -> Iterator[tuple[NodeProto, str]]:
    """Every node: all graphs (nested too) and every model-local function body."""
    for graph, where in _iter_graphs(model):
        for node in graph.node:
            yield node, where
    for function in model.functions:
        for node in function.node:
            yield node, _function_label(function.domain, function.name)


def _iter_tensors(model: ModelProto) -> Iterator[tuple[TensorProto, str]]:
    """Every TensorProto: initializers, sparse tensors' values and indices, attribute values."""
    for graph, where in _iter_graphs(model):
        for tensor in graph.initializer:
            yield tensor, f"{where} initializer"
        for sparse in graph.sparse_initializer:
            yield sparse.values, f"{where} sparse initializer values"
            yield sparse.indices, f"{where} sparse initializer indices"
    for node, where in _iter_nodes(model):
        for attr in node.attribute:
            yield from _attribute_tensors(attr, f"{where} > {_node_label(node)}")
    for function in model.functions:
        where = f"{_function_label(function.domain, function.name)} attribute default"
        for attr in function.attribute_proto:
            yield from _attribute_tensors(attr, where)


def _attribute_tensors(attr: AttributeProto, where: str) -> Iterator[tuple[TensorProto, str]]:
    label = f"{where} attribute '{attr.name}'"
    if attr.HasField("t"):
        yield attr.t, label
    for tensor in attr.tensors:
        yield tensor, label
    sparse_tensors = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
    for sparse in [*sparse_tensors, *attr.sparse_tensors]:
        yield sparse.values, f"{label} sparse values"
        yield sparse.indices, f"{label} sparse indices"


def _node_label(node: NodeProto) -> str:
    return f"{node.op_type} node '{node.name}'" if node.name else f"unnamed {node.op_type} node"


def _function_label(domain: str, name: str) -> str:
    return f"function '{domain}:{name}'" if domain else f"function '{name}'"


# --- external data and custom operators ---------------------------------------------------------


def _reject_external_data(model: ModelProto) -> None:
    from onnx import TensorProto

    for tensor, where in _iter_tensors(model):
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if ORT_MEMORY_MARKER in location:
            raise ModelRejected(
                "external_data_forbidden",
                f"Tensor '{tensor.name}' ({where}) uses ONNX Runtime's in-memory external-data "
                f"marker {ORT_MEMORY_MARKER} (location '{location}'), which reads raw process "
                "memory. Only self-contained models are accepted: save the model with all "
                "tensors embedded.",
            )
        if tensor.data_location == TensorProto.EXTERNAL or entries:
            # Any path is refused, not only ones that look like traversal: '../', absolute
            # paths, and symlinks have all escaped past sanitisers (CVE-2022-25882,
            # CVE-2024-27318), and an uploaded model has no folder of its own anyway.
            raise ModelRejected(
                "external_data_forbidden",
                f"Tensor '{tensor.name}' ({where}) stores its data outside the model file "
                f"(external data location '{location}'). Only self-contained single-file "
                "models are accepted: save it with onnx.save_model(model, path, "
                "save_as_external_data=False); models over 2 GB cannot be uploaded.",
            )


def _reject_custom_ops(model: ModelProto) -> None:
    # A node may call a model-local function; ONNX Runtime inlines those, so no native code
    # runs for them. Their bodies are checked like any other nodes by _iter_nodes.
    local_functions = {(f.domain, f.name, f.overload) for f in model.functions}
    opset_versions = {opset.domain: opset.version for opset in model.opset_import}
    for node, where in _iter_nodes(model):
        if node.domain in ALLOWED_OP_DOMAINS:
            continue
        if (node.domain, node.op_type, node.overload) in local_functions:
            continue
        imported = (
            f"imported at opset version {opset_versions[node.domain]}"
            if node.domain in opset_versions
            else "not imported by the model"
        )
        raise ModelRejected(
            "custom_op_forbidden",
            f"The {_node_label(node)} ({where}) uses operator '{node.op_type}' from the "
            f"custom domain '{node.domain}' ({imported}). Custom operators need native "
            "libraries, which are not loaded here. Allowed domains: ai.onnx (''), ai.onnx.ml, "
            "ai.onnx.preview.training, com.microsoft; re-export with standard operators.",
        )


# --- schema and metadata --------------------------------------------------------------------------


def _describe_value(name: str, type_proto: TypeProto, role: str, warnings: list[str]) -> dict[str, Any]:
    from core.tensor_types import DATATYPE_OF_ONNX

    kind = _kind(type_proto)
    entry: dict[str, Any] = {
        "name": name,
        "datatype": None,
        "onnx_type": _type_string(type_proto),
        "shape": None,
        "dim_names": None,
        "kind": kind,
    }
    if kind != "tensor":
        return entry
    tensor_type = type_proto.tensor_type
    element = _element_type_name(tensor_type.elem_type)
    entry["datatype"] = DATATYPE_OF_ONNX.get(element)
    if entry["datatype"] is None:
        warnings.append(
            f"{role} '{name}' has element type {element}, which the Open Inference Protocol "
            "has no datatype for; it cannot be exchanged through the v2 API."
        )
    if tensor_type.HasField("shape"):
        entry["shape"], entry["dim_names"] = _shape(tensor_type.shape)
    return entry


def _shape(shape_proto: TensorShapeProto) -> tuple[list[int], list[str | None]]:
    """(-1 for every variable or unknown dimension, the symbolic name or None)."""
    shape: list[int] = []
    names: list[str | None] = []
    for dim in shape_proto.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            shape.append(dim.dim_value)
            names.append(None)
        else:
            shape.append(-1)
            names.append(dim.dim_param if dim.HasField("dim_param") and dim.dim_param else None)
    return shape, names


_KINDS = {
    "tensor_type": "tensor",
    "sequence_type": "sequence",
    "map_type": "map",
    "optional_type": "optional",
    "sparse_tensor_type": "sparse_tensor",
    "opaque_type": "opaque",
}


def _kind(type_proto: TypeProto) -> str:
    return _KINDS.get(type_proto.WhichOneof("value") or "", "unknown")


def _type_string(type_proto: TypeProto) -> str:
    """The type in ONNX Runtime's notation, e.g. ``seq(map(int64,tensor(float)))``."""
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        return f"tensor({_element_type_name(type_proto.tensor_type.elem_type)})"
    if which == "sparse_tensor_type":
        return f"sparse_tensor({_element_type_name(type_proto.sparse_tensor_type.elem_type)})"
    if which == "sequence_type":
        return f"seq({_type_string(type_proto.sequence_type.elem_type)})"
    if which == "map_type":
        key = _element_type_name(type_proto.map_type.key_type)
        return f"map({key},{_type_string(type_proto.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({_type_string(type_proto.optional_type.elem_type)})"
    if which == "opaque_type":
        return f"opaque({type_proto.opaque_type.domain},{type_proto.opaque_type.name})"
    return "unknown"


def _element_type_name(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:  # a number this onnx release does not know
        return f"unknown_{elem_type}"


def _describe_metadata(model: ModelProto) -> dict[str, Any]:
    return {
        "ir_version": model.ir_version,
        "opset_imports": [{"domain": opset.domain, "version": opset.version} for opset in model.opset_import],
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "model_version": model.model_version,
        "graph_name": model.graph.name,
        "doc_string": model.doc_string,
        "metadata_props": {prop.key: prop.value for prop in model.metadata_props},
    }


# --- allocation sized by input values ------------------------------------------------------------
#
# Every tensor is given one of three origins, the highest of its producer's inputs unless a rule
# below says otherwise:
#   _CONSTANT  initializers, Constant nodes and what is computed from them alone;
#   _SIZE      numbers bounded by the size of the request's tensors: Shape(x), Size(x), indices
#              (ArgMax, NonZero), booleans, and what only "plumbing" ops (_SIZE_PRESERVING:
#              indexing, concatenation, casts, +, -, /, min, max) make of them. A size computed
#              so grows with the request like any activation does (an outer product, attention),
#              and the request's size is capped (MAX_INPUT_ELEMENTS); transformer exports build
#              their masks this way (ConstantOfShape / Expand / Range of Shape(input_ids)), so
#              such models are not flagged;
#   _VALUE     anything else computed from a graph input: the request's numbers themselves.
# A node in _SIZE_INPUTS whose size-setting input has _VALUE origin allocates what the request
# asks for: 40 bytes of int64 can ask ConstantOfShape for 10**18 floats. Such models are flagged.
#
# This is a static bound, not a proof: a hostile author can still make a _SIZE number large with
# enough plumbing (Concat of k copies of a dimension gives n**k elements). The runtime cap is the
# guarantee; MODEL_ISOLATION=all puts every model under it (docs/operations.md).

_CONSTANT, _SIZE, _VALUE = 0, 1, 2

# op_type -> the inputs whose VALUES set an output's size, from the ONNX operator specification
# (onnx/docs/Operators.md, latest opset; earlier opsets took these as attributes, or, for
# Resize-10, scales as input 1 - see _size_inputs). Not listed, on purpose: ops whose output
# is no larger than their data inputs or than the product of their inputs' sizes (Reshape, Slice,
# Split, TopK, Compress, NonZero, Unique, Gather*, Scatter*, NonMaxSuppression, RoiAlign, Einsum,
# Scan), and those sized by attributes only (RandomNormal, Multinomial, ConvTranspose).
_SIZE_INPUTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("", "ConstantOfShape"): (0,),  # shape
    ("", "Expand"): (1,),  # shape
    ("", "Tile"): (1,),  # repeats
    ("", "Range"): (0, 1, 2),  # start, limit, delta
    ("", "Resize"): (2, 3),  # scales, sizes
    ("", "Upsample"): (1,),  # scales
    ("", "Pad"): (1,),  # pads
    ("", "CenterCropPad"): (1,),  # shape
    ("", "OneHot"): (1,),  # depth
    ("", "Col2Im"): (1, 2),  # image_shape, block_shape
    ("", "AffineGrid"): (1,),  # size
    ("", "MaxUnpool"): (2,),  # output_shape
    ("", "DFT"): (1,),  # dft_length
    ("", "STFT"): (1, 3),  # frame_step, frame_length
    ("", "MelWeightMatrix"): (0, 1),  # num_mel_bins, dft_length
    ("", "HannWindow"): (0,),  # size
    ("", "HammingWindow"): (0,),  # size
    ("", "BlackmanWindow"): (0,),  # size
    ("", "ImageDecoder"): (0,),  # the encoded image: its header sets the decoded size
    ("", "Loop"): (0, 1),  # M, cond: the iterations, each of which may grow the outputs
    ("com.microsoft", "Range"): (0, 1, 2),
    ("com.microsoft", "Pad"): (1,),
    # Text generation: max_length, min_length, num_beams, num_return_sequences, ...
    ("com.microsoft", "BeamSearch"): tuple(range(1, 16)),
    ("com.microsoft", "WhisperBeamSearch"): tuple(range(1, 16)),
    ("com.microsoft", "GreedySearch"): tuple(range(1, 16)),
    ("com.microsoft", "Sampling"): tuple(range(1, 16)),
}

# Their outputs' values are bounded by their inputs' sizes, whatever the inputs' values.
_SIZE_RESULTS = frozenset(
    {
        "Shape", "Size", "ArgMax", "ArgMin", "NonZero", "Equal", "Less", "LessOrEqual", "Greater",
        "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Sign", "SequenceLength",
    }
)  # fmt: skip

# Plumbing: a _SIZE number stays _SIZE through these (at most linear in their inputs).
_SIZE_PRESERVING = frozenset(
    {
        "Identity", "Cast", "CastLike", "Gather", "GatherElements", "GatherND", "Slice", "Concat",
        "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Transpose", "Split", "Add", "Sub", "Div",
        "Max", "Min", "Abs", "Neg", "Where", "Floor", "Ceil", "Round", "Clip", "Mod", "ReduceMax",
        "ReduceMin", "Sum", "Mean", "Relu", "Expand", "Tile", "ConstantOfShape", "Range",
        "SequenceConstruct", "SequenceAt", "ConcatFromSequence", "Optional", "OptionalGetElement",
    }
)  # fmt: skip

_MAX_FUNCTION_DEPTH = 16


def value_sized_allocations(model: ModelProto) -> list[str]:
    """Nodes whose output size is set by the values of the request's inputs, each described
    (which node, where, which input); empty when every allocation is bounded by the request's
    size and the model's constants. Checks every graph, subgraph and model-local function."""
    opset = {entry.domain or "": entry.version for entry in model.opset_import}
    functions = {(f.domain, f.name): f for f in model.functions}
    analysis = _Taint(opset=opset, functions=functions)
    graph = model.graph
    origins: dict[str, int] = {t.name: _CONSTANT for t in graph.initializer}
    origins.update({s.values.name: _CONSTANT for s in graph.sparse_initializer})
    for value in graph.input:
        # An IR < 4 graph lists its initializers as inputs too: those are weights, not requests.
        origins.setdefault(value.name, _VALUE)
    analysis.graph(graph, origins, f"main graph '{graph.name}'")
    return list(dict.fromkeys(analysis.findings))


class _Taint:
    def __init__(self, *, opset: dict[str, int], functions: dict) -> None:
        self.opset = opset
        self.functions = functions
        self.findings: list[str] = []

    def graph(self, graph: GraphProto, origins: dict[str, int], where: str, *, depth: int = 0) -> dict[str, int]:
        """Walk the graph's nodes in order (ONNX requires topological order), filling ``origins``
        (which holds the graph's inputs and its enclosing scopes' names); returns it."""
        for tensor in graph.initializer:
            origins[tensor.name] = _CONSTANT
        for sparse in graph.sparse_initializer:
            origins[sparse.values.name] = _CONSTANT
        for node in graph.node:
            self.node(node, origins, where, depth=depth)
        return origins

    def node(self, node: NodeProto, origins: dict[str, int], where: str, *, depth: int) -> None:
        inputs = [origins.get(name, _VALUE) if name else _CONSTANT for name in node.input]
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        for index in self._size_inputs(domain, node):
            if index < len(inputs) and inputs[index] == _VALUE:
                self.findings.append(
                    f"{_node_label(node)} ({where}) sizes its output by input {index} "
                    f"'{node.input[index]}', computed from the request's values"
                )
        highest = max(inputs, default=_CONSTANT)
        if node.op_type in _SIZE_RESULTS and domain == "":
            result = min(highest, _SIZE)
        elif (node.op_type in _SIZE_PRESERVING and domain == "") or highest == _CONSTANT:
            result = highest
        else:
            result = _VALUE
        for subgraph_result in self._subgraphs(node, inputs, origins, where, depth=depth):
            result = max(result, subgraph_result)
        function = self.functions.get((node.domain, node.op_type))
        if function is not None:
            result = max(result, self._function(function, inputs, node, where, depth=depth))
        for name in node.output:
            if name:
                origins[name] = result

    def _size_inputs(self, domain: str, node: NodeProto) -> tuple[int, ...]:
        if domain == "" and node.op_type == "Resize" and self.opset.get("", 0) < 11:
            return (1,)  # Resize-10: (X, scales)
        return _SIZE_INPUTS.get((domain, node.op_type), ())

    def _subgraphs(
        self, node: NodeProto, inputs: list[int], origins: dict[str, int], where: str, *, depth: int
    ) -> Iterator[int]:
        """The highest origin of each subgraph's outputs. A subgraph's inputs take the origin
        of the node input in the same place (Scan's states and slices, Loop's trip count,
        condition and carried values), or the highest of them where the places do not match; a
        Loop body is walked again while its outputs raise the origin of what it carries."""
        highest = max(inputs, default=_CONSTANT)
        is_loop = node.op_type == "Loop"
        for attr in node.attribute:
            graphs = [attr.g] if attr.HasField("g") else []
            for subgraph in [*graphs, *attr.graphs]:
                sub_where = f"{where} > {_node_label(node)} attribute '{attr.name}'"
                positional = len(subgraph.input) <= len(inputs)
                entry = [inputs[i] if positional else highest for i in range(len(subgraph.input))]
                if is_loop and entry and not node.input[0]:
                    entry[0] = _VALUE  # no trip count: the iteration number is as large as the loop runs
                for _ in range(3):  # three origins: the lattice is climbed in at most two steps
                    scope = dict(origins)
                    scope.update({value.name: origin for value, origin in zip(subgraph.input, entry, strict=True)})
                    self.graph(subgraph, scope, sub_where, depth=depth)
                    produced = [scope.get(value.name, _VALUE) for value in subgraph.output]
                    if not is_loop:
                        break
                    # body outputs (cond, carried...) feed back into body inputs (cond, carried...)
                    raised = list(entry)
                    for index, origin in enumerate(produced[: max(0, len(entry) - 1)]):
                        raised[index + 1] = max(raised[index + 1], origin)
                    if raised == entry:
                        break
                    entry = raised
                if is_loop and produced and produced[0] == _VALUE:
                    self.findings.append(
                        f"{_node_label(node)} ({where}) repeats while a condition computed from the "
                        "request's values holds"
                    )
                yield max(produced, default=_CONSTANT)

    def _function(self, function, inputs: list[int], node: NodeProto, where: str, *, depth: int) -> int:
        if depth >= _MAX_FUNCTION_DEPTH:
            self.findings.append(f"{_node_label(node)} ({where}) nests model-local functions too deeply to trace")
            return _VALUE
        scope = {name: inputs[i] if i < len(inputs) else _CONSTANT for i, name in enumerate(function.input)}
        label = f"{where} > {_function_label(function.domain, function.name)}"
        for inner in function.node:
            self.node(inner, scope, label, depth=depth + 1)
        return max((scope.get(name, _VALUE) for name in function.output), default=_CONSTANT)


# --- ONNX Runtime -----------------------------------------------------------------------------


def _create_session(data: bytes) -> InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread each: the sandbox's CPU limit then bounds wall time too, and a validation
    # never competes with serving for every core.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; warnings would bury a crash's last words
    try:
        return onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        # onnxruntime's pybind errors (Fail, InvalidGraph, NotImplemented, ...) derive from
        # Exception directly, so there is no narrower class to catch.
        if _is_out_of_memory(exc):
            raise _out_of_memory("while ONNX Runtime loaded the model", exc) from exc
        raise ModelRejected(
            "runtime_load_failed",
            f"ONNX Runtime could not load the model: {_message(exc)}. The model may use "
            "an operator or opset version this server's ONNX Runtime does not implement.",
        ) from exc


def _test_run(session: InferenceSession) -> list[str]:
    """Run the model once on zeros; return warnings (a failed run is not a rejection)."""
    import numpy as np
    import onnxruntime

    feeds: dict[str, Any] = {}
    for arg in session.get_inputs():
        dtype = _dummy_dtype(arg.type)
        if dtype is None:
            return [
                (
                    f"Test run skipped: input '{arg.name}' has type {arg.type}, for which no "
                    "dummy value is built. The model loads; check that it runs on real inputs."
                )
            ]
        # Variable or unknown dimensions become 1, the smallest size most graphs accept.
        shape = [dim if isinstance(dim, int) and dim >= 0 else 1 for dim in arg.shape or []]
        if math.prod(shape) * dtype.itemsize > _DUMMY_INPUT_BUDGET_BYTES:
            return [
                (
                    f"Test run skipped: input '{arg.name}' has the fixed shape {shape}, too large "
                    "for a dummy value. The model loads; check that it runs on real inputs."
                )
            ]
        if dtype.hasobject:
            # np.zeros would fill an object array with the int 0; string inputs need strings.
            feeds[arg.name] = np.full(shape, "", dtype=object)
        else:
            feeds[arg.name] = np.zeros(shape, dtype=dtype)

    run_options = onnxruntime.RunOptions()
    run_options.log_severity_level = 4  # a failure is returned as a warning; no need to log it too
    try:
        session.run(None, feeds, run_options)
    except Exception as exc:
        if _is_out_of_memory(exc):
            # A model that cannot even run on the smallest inputs within the memory limit
            # (a ConstantOfShape bomb, onnxruntime #28730) would take the server down.
            raise _out_of_memory("during a test run with dummy inputs", exc) from exc
        return [
            (
                "Test run with dummy inputs (zeros or empty strings, variable dimensions = 1) "
                f"failed: {_message(exc)}. The model loads; check that it runs on real inputs."
            )
        ]
    return []


def _dummy_dtype(ort_type: str) -> np.dtype | None:
    """The numpy dtype of a dummy value for an ORT type like ``tensor(float)``; None when none
    is built: not a tensor, no datatype, or bfloat16 (ONNX Runtime's numpy bridge has none)."""
    from core.tensor_types import DATATYPE_OF_ONNX, DTYPES

    if not (ort_type.startswith("tensor(") and ort_type.endswith(")")):
        return None
    datatype = DATATYPE_OF_ONNX.get(ort_type[len("tensor(") : -1])
    return None if datatype in (None, "BF16") else DTYPES[datatype]


# --- errors -------------------------------------------------------------------------------------


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    message = str(exc).lower()
    return any(phrase in message for phrase in _OUT_OF_MEMORY_PHRASES)


def _out_of_memory(stage: str, exc: BaseException) -> ModelRejected:
    return ModelRejected(
        "resource_limit_exceeded",
        f"The model ran out of memory {stage} ({_message(exc) or type(exc).__name__}). "
        "It asks for more memory than a model may use here.",
    )


def _message(exc: BaseException, limit: int = 1000) -> str:
    """The exception's message on one line, capped: it ends up in API responses."""
    message = " ".join(str(exc).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


# --- command-line entry for registry.sandbox --------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Limit this process, inspect the file at PATH, print one JSON line with the outcome.

    ``{"ok": true, "report": {...}}`` or ``{"ok": false, "code": ..., "detail": ...}``. The exit
    status is 0 whenever that line was printed; the parent treats anything else as a crash.
    """
    parser = argparse.ArgumentParser(
        prog="python -m registry.onnx_inspect",
        description="Inspect an untrusted ONNX model under memory and CPU limits.",
    )
    parser.add_argument("--memory-mb", type=_positive_int, required=True)
    parser.add_argument("--cpu-seconds", type=_positive_int, required=True)
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)

    _limit_resources(memory_mb=args.memory_mb, cpu_seconds=args.cpu_seconds)
    try:
        outcome: dict[str, Any] = {"ok": True, "report": inspect_model(args.path.read_bytes())}
    except ModelRejected as exc:
        outcome = {"ok": False, "code": exc.code, "detail": exc.detail}
    except MemoryError:
        outcome = {
            "ok": False,
            "code": "resource_limit_exceeded",
            "detail": f"Inspecting the model needed more than {args.memory_mb} MB of memory.",
        }
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()
    return 0


def _limit_resources(*, memory_mb: int, cpu_seconds: int) -> None:
    """Cap address space and CPU time of this process (and of anything it would exec)."""
    _lower_limit(resource.RLIMIT_AS, soft=memory_mb * 2**20, hard=memory_mb * 2**20)
    # The soft limit sends SIGXCPU, which the parent reports as a timeout; the hard limit one
    # second later is SIGKILL in case something ignores SIGXCPU.
    _lower_limit(resource.RLIMIT_CPU, soft=cpu_seconds, hard=cpu_seconds + 1)
    # SIGXCPU and crashes would otherwise dump cores of up to memory_mb each.
    _lower_limit(resource.RLIMIT_CORE, soft=0, hard=0)


def _lower_limit(which: int, *, soft: int, hard: int) -> None:
    # An unprivileged process may only lower a hard limit, so never ask above the current one.
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
