"""registry.onnx_inspect: what a model's report says, and which models are rejected with which code.

These call `inspect_model` in-process, which is fine for the models built here; untrusted
models only ever go through the sandbox (tests/registry/test_sandbox.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from registry.onnx_inspect import ModelRejected, inspect_model
from tests.registry.onnx_factories import (
    EXTERNAL_DATA_SITES,
    make_add_model,
    make_custom_domain_model,
    make_embedded_data_model,
    make_external_data_model,
    make_iris_model,
    make_local_function_model,
    make_old_ir_model,
    make_reshape_to_four_model,
    make_undefined_input_model,
    make_unsupported_opset_model,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def rejection(data: bytes, **kwargs) -> ModelRejected:
    with pytest.raises(ModelRejected) as caught:
        inspect_model(data, **kwargs)
    return caught.value


# --- the report -----------------------------------------------------------------------------------


def test_inspect_reports_schema_with_symbolic_batch_dimension():
    report = inspect_model(make_add_model())

    float_batch_by_3 = {
        "datatype": "FP32",
        "onnx_type": "tensor(float)",
        "shape": [-1, 3],
        "dim_names": ["batch", None],
        "kind": "tensor",
    }
    assert report["input_schema"] == [{"name": "X", **float_batch_by_3}, {"name": "Y", **float_batch_by_3}]
    assert report["output_schema"] == [{"name": "Z", **float_batch_by_3}]
    assert report["warnings"] == []


def test_inspect_reports_model_metadata():
    metadata = inspect_model(make_add_model())["model_metadata"]

    assert metadata == {
        "ir_version": 8,
        "opset_imports": [{"domain": "", "version": 17}],
        "producer_name": "modelforge-tests",
        "producer_version": "1.0",
        "domain": "",
        "model_version": 0,
        "graph_name": "add_graph",
        "doc_string": "Adds two tensors.",
        "metadata_props": {"author": "tests", "license": "MIT"},
    }


def test_inspect_report_survives_a_json_round_trip():
    report = inspect_model(make_iris_model())

    assert json.loads(json.dumps(report)) == report


def test_inspect_leaves_initializers_listed_as_inputs_out_of_the_input_schema():
    # IR 3 models list their weights among the graph inputs; clients cannot send those.
    report = inspect_model(make_old_ir_model())

    assert [entry["name"] for entry in report["input_schema"]] == ["X"]


def test_inspect_reports_zipmap_output_as_a_sequence_without_datatype():
    report = inspect_model(make_iris_model(zipmap=True))

    assert report["input_schema"] == [
        {
            "name": "X",
            "datatype": "FP32",
            "onnx_type": "tensor(float)",
            "shape": [-1, 4],
            "dim_names": [None, None],
            "kind": "tensor",
        }
    ]
    label, probabilities = report["output_schema"]
    assert (label["name"], label["datatype"], label["shape"]) == ("output_label", "INT64", [-1])
    assert probabilities == {
        "name": "output_probability",
        "datatype": None,
        "onnx_type": "seq(map(int64,tensor(float)))",
        "shape": None,
        "dim_names": None,
        "kind": "sequence",
    }


def test_inspect_reports_iris_probabilities_as_a_tensor_without_zipmap():
    report = inspect_model(make_iris_model(zipmap=False))

    probabilities = report["output_schema"][1]
    assert (probabilities["name"], probabilities["datatype"], probabilities["shape"]) == (
        "probabilities",
        "FP32",
        [-1, 3],
    )


def test_inspect_turns_a_failed_dummy_run_into_a_warning():
    report = inspect_model(make_reshape_to_four_model())

    assert report["input_schema"][0]["shape"] == [-1]
    [warning] = report["warnings"]
    assert "dummy inputs" in warning
    assert "reshape" in warning.lower()


def test_inspect_accepts_a_custom_domain_defined_by_a_model_local_function():
    report = inspect_model(make_local_function_model())

    assert {"domain": "local.functions", "version": 1} in report["model_metadata"]["opset_imports"]


# --- external data --------------------------------------------------------------------------------


@pytest.mark.parametrize("site", EXTERNAL_DATA_SITES)
@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "subdir/../../etc/passwd", "/etc/passwd", "*/_ORT_MEM_ADDR_/*"]
)
def test_inspect_rejects_external_data(location, site):
    rejected = rejection(make_external_data_model(location, on=site))

    assert rejected.code == "external_data_forbidden"
    assert "'W'" in rejected.detail
    assert location in rejected.detail


@pytest.mark.parametrize("site", [site for site in EXTERNAL_DATA_SITES if site != "sparse"])
def test_inspect_accepts_each_external_data_model_once_its_data_is_embedded(site):
    # The control for the test above: the same graphs are valid, so the rejection there is
    # caused by the external data and nothing else. ("sparse" is checker-invalid either way.)
    report = inspect_model(make_embedded_data_model(on=site))

    assert report["warnings"] == []


def test_inspect_names_the_onnx_runtime_memory_marker():
    rejected = rejection(make_external_data_model("*/_ORT_MEM_ADDR_/*", on="constant_attr"))

    assert rejected.code == "external_data_forbidden"
    assert "in-memory" in rejected.detail


def test_inspect_rejects_external_data_entries_on_a_tensor_not_marked_external():
    # ONNX Runtime decides by data_location, but a runtime that looks at the entries instead
    # would follow the path; refuse both.
    model = onnx.load_model_from_string(make_embedded_data_model(on="initializer"))
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"

    assert rejection(model.SerializeToString()).code == "external_data_forbidden"


def test_inspect_rejects_external_sparse_indices():
    model = onnx.load_model_from_string(make_external_data_model("weights.bin", on="sparse"))
    sparse = model.graph.sparse_initializer[0]
    sparse.values.CopyFrom(onnx.helper.make_tensor("W", onnx.TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))
    sparse.indices.data_location = onnx.TensorProto.EXTERNAL

    rejected = rejection(model.SerializeToString())

    assert rejected.code == "external_data_forbidden"
    assert "sparse initializer indices" in rejected.detail


# --- custom operators -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["graph", "subgraph", "function"])
def test_inspect_rejects_custom_operator_domain(where):
    rejected = rejection(make_custom_domain_model("com.example.custom", where=where))

    assert rejected.code == "custom_op_forbidden"
    assert "Frobnicate" in rejected.detail
    assert "com.example.custom" in rejected.detail


# --- broken files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        make_add_model()[: len(make_add_model()) // 2],
        random.Random(0).randbytes(4096),
        b"not an onnx model",
        onnx.ModelProto(ir_version=8).SerializeToString(),  # parses, but has no graph
        onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], [])).SerializeToString(),
    ],
    ids=["empty", "truncated", "random", "text", "no_graph", "empty_graph"],
)
def test_inspect_rejects_what_is_not_an_onnx_model(data):
    assert rejection(data).code == "invalid_model"


def test_inspect_rejects_a_graph_the_onnx_checker_refuses():
    rejected = rejection(make_undefined_input_model())

    assert rejected.code == "invalid_model"
    assert "checker" in rejected.detail
    assert "'missing'" in rejected.detail


def test_inspect_rejects_dimensions_above_the_cap():
    rejected = rejection(make_add_model(), max_dimension=2)

    assert rejected.code == "invalid_model"
    assert "'X'" in rejected.detail


def test_inspect_reports_a_model_onnx_runtime_cannot_load():
    rejected = rejection(make_unsupported_opset_model())

    assert rejected.code == "runtime_load_failed"
    assert "ONNX Runtime" in rejected.detail


# --- the models shipped with onnx's backend tests -------------------------------------------------

BACKEND_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
BACKEND_MODELS = sorted(
    [*BACKEND_DATA.glob("pytorch-converted/*/model.onnx"), *BACKEND_DATA.glob("simple/*/model.onnx")]
)

# What onnxruntime raises when it refuses a model (its classes derive from Exception directly).
ORT_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
)

# OIP datatype -> numpy dtype, written out here so the comparison below does not reuse the
# mapping under test.
OIP_NUMPY_DTYPES = {
    "BOOL": np.bool_,
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
    "BYTES": np.object_,
}


def test_onnx_backend_models_are_installed():
    # Guards the parametrisation below against passing vacuously on an onnx without test data.
    assert len(BACKEND_MODELS) > 50


@pytest.mark.parametrize("path", BACKEND_MODELS, ids=lambda path: f"{path.parent.parent.name}/{path.parent.name}")
def test_inspect_reports_the_declared_interface_of_onnx_backend_model(path):
    data = path.read_bytes()
    try:
        report = inspect_model(data)
    except ModelRejected as rejected:
        # Only acceptable when ONNX Runtime itself refuses the model (opset 6, Gradient, or a
        # locale this machine lacks), which it must then do outside our code too.
        assert rejected.code == "runtime_load_failed", rejected.detail
        with pytest.raises(ORT_LOAD_ERRORS):
            onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return

    model = onnx.load_model_from_string(data)
    weights = {tensor.name for tensor in model.graph.initializer}
    declared_inputs = [value for value in model.graph.input if value.name not in weights]
    assert [reported(entry) for entry in report["input_schema"]] == [declared(value) for value in declared_inputs]
    assert [reported(entry) for entry in report["output_schema"]] == [declared(value) for value in model.graph.output]


def declared(value: onnx.ValueInfoProto) -> tuple:
    """(name, kind, numpy dtype, shape with -1 for unknowns) as the model file declares it."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return value.name, kind, None, None
    tensor_type = value.type.tensor_type
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
    return value.name, kind, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)), shape


def reported(entry: dict) -> tuple:
    kind = f"{entry['kind']}_type"  # "sequence" -> "sequence_type", the TypeProto field
    if entry["kind"] != "tensor":
        return entry["name"], kind, None, None
    return entry["name"], kind, np.dtype(OIP_NUMPY_DTYPES[entry["datatype"]]), entry["shape"]


# --- command-line entry ---------------------------------------------------------------------------


def test_importing_the_module_sets_no_limits_and_loads_no_onnx():
    # Django imports registry.onnx_inspect; only `python -m registry.onnx_inspect` may limit
    # the process, and importing must not drag onnxruntime into every web worker.
    probe = (
        "import resource, sys\n"
        "limits = lambda: [resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU)]\n"
        "before = limits()\n"
        "import registry.onnx_inspect\n"
        "print(limits() == before, sorted({'onnx', 'onnxruntime', 'numpy'} & set(sys.modules)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )

    assert completed.stdout.strip() == "True []"


def test_command_line_prints_one_json_line(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(make_add_model())

    completed = subprocess.run(
        [sys.executable, "-m", "registry.onnx_inspect", "--memory-mb", "1024", "--cpu-seconds", "10", str(path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    [line] = completed.stdout.splitlines()
    outcome = json.loads(line)
    assert outcome["ok"] is True
    assert [entry["name"] for entry in outcome["report"]["input_schema"]] == ["X", "Y"]
