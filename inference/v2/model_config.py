"""A model version's configuration in Triton's shape: `ModelConfig` of Triton's
model_config.proto (github.com/triton-inference-server/common, protobuf/model_config.proto),
as the JSON Triton's REST API answers (`GET /v2/models/{name}[/versions/{v}]/config`) and the
message its gRPC ModelConfig RPC carries. One function, `triton_config`, for both doors.

What each part says, from the registry row and the settings its sessions are built with
(inference.sessions.RuntimeSettings):

- ``max_batch_size``: 0 when the model is not batched (Triton's "no batching": ``dims`` are the
  whole shape). With dynamic batching on, and every input's first dimension variable (the only
  models inference.batching merges), it is the model's ``max_batch_size`` and ``dims`` leave
  the first (batch) dimension out, as Triton's do; ``dynamic_batching`` then holds the queue
  settings, and ``default_queue_policy`` rejects (Triton's REJECT) past its timeout.
- ``input``/``output``: tensors only (what /v2 carries: inference.v2.codec), ``data_type`` as
  Triton's DataType enum names (BYTES is TYPE_STRING there), -1 for a variable dimension,
  [-1] for an input of unknown rank, and dims [1] with ``reshape`` [] for a tensor with no
  dimension left (a scalar; a batched model's [batch] output).
- ``instance_group``: one CPU group of ``sessions_per_process`` sessions (per server process).
- ``optimization.graph.level`` and ``parameters``: the ONNX Runtime settings as Triton's
  onnxruntime backend spells them (its README: level -1 basic, 1 extended, 2 disabled, absent
  or 0 all; ``intra_op_thread_count``, ``inter_op_thread_count``, ``execution_mode`` 0/1,
  ``enable_mem_arena`` 1/0), plus ``execution_providers`` (ONNX Runtime's names, in order),
  which the backend has no key for.
- ``model_warmup``: the model's warm-up as Triton describes one (zero_data, random_data, or the
  stored sample as ``input_data_file``), run ``count`` times on each new session.
- ``version_policy``: ``all``: every ready version is served (versions are semver strings here,
  which Triton's integer ``specific`` list cannot hold).

64-bit integers are JSON numbers, as Triton writes them (protobuf's own JSON writes them as
strings; json_format.ParseDict reads either).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from inference.batching import batchable_schema
from inference.sessions import get_pool, warmup_feeds
from inference.v2 import codec
from registry.models import MLModel

PLATFORM = codec.PLATFORM
BACKEND = "onnxruntime"

# Triton's onnxruntime backend: optimization { graph { level } } (0, its default, is all).
GRAPH_LEVELS = {"all": 0, "extended": 1, "basic": -1, "disabled": 2}
WARMUP_KINDS = {"zero": "zero_data", "random": "random_data"}
SAMPLE_FILE = "warmup_sample"  # where the stored sample would be, in Triton's terms


def data_type(datatype: str) -> str:
    """Triton's DataType enum name of a v2 datatype (FP32 -> TYPE_FP32, BYTES -> TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def batched(model: MLModel) -> bool:
    """Whether requests to the model are merged (the batching module's own condition)."""
    return bool(model.batching_enabled) and batchable_schema(model.input_schema)


def _dims(entry: dict, *, drop_batch: bool) -> list[int]:
    shape = entry.get("shape")
    if shape is None:
        return [-1]
    dims = list(shape)
    return dims[1:] if drop_batch and dims else dims


def _tensor(entry: dict, *, drop_batch: bool) -> dict[str, Any]:
    tensor = {
        "name": entry["name"],
        "data_type": data_type(entry["datatype"]),
        "dims": _dims(entry, drop_batch=drop_batch),
    }
    if not tensor["dims"]:
        # No dimension left (a scalar, or [batch] once batched): Triton's idiom is dims [1]
        # reshaped to [] (its configs must state dims).
        tensor["dims"], tensor["reshape"] = [1], {"shape": []}
    return tensor


def _parameters(values: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {key: {"string_value": str(value)} for key, value in values.items()}


def _warmup(model: MLModel, runtime, is_batched: bool) -> list[dict[str, Any]]:
    if not runtime.warmup_count:
        return []
    entries = codec.tensor_entries(model.input_schema)
    try:
        feeds = warmup_feeds(model.input_schema, runtime.warmup_data, runtime.warmup_sample)
    except Exception:  # a sample that no longer fits: the warm-up is skipped (inference.sessions)
        return []
    batch = 0
    inputs = {}
    for entry in entries:
        array = feeds.get(entry["name"])
        shape = list(array.shape) if array is not None else [1]
        if is_batched:
            batch = max(batch, shape[0] if shape else 1)
            shape = shape[1:]
        kind = WARMUP_KINDS.get(runtime.warmup_data)
        source = {kind: True} if kind else {"input_data_file": SAMPLE_FILE}
        inputs[entry["name"]] = {"data_type": data_type(entry["datatype"]), "dims": shape, **source}
    return [
        {
            "name": f"{runtime.warmup_data}_warmup",
            "batch_size": batch if is_batched else 0,
            "count": runtime.warmup_count,
            "inputs": inputs,
        }
    ]


def triton_config(model: MLModel) -> dict[str, Any]:
    """The ModelConfig of a model version, as a JSON-ready dict (see the module docstring)."""
    runtime = get_pool().runtime(model)
    is_batched = batched(model)
    isolated = model.value_dependent_memory or settings.MODEL_ISOLATION == "all"
    config: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"all": {}},
        "max_batch_size": model.max_batch_size if is_batched else 0,
        "input": [_tensor(entry, drop_batch=is_batched) for entry in codec.tensor_entries(model.input_schema)],
        "output": [_tensor(entry, drop_batch=is_batched) for entry in codec.tensor_entries(model.output_schema)],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": runtime.sessions}],
        "optimization": {"graph": {"level": GRAPH_LEVELS[runtime.graph_optimization_level]}},
        "parameters": _parameters(
            {
                "intra_op_thread_count": runtime.intra_op_threads,
                "inter_op_thread_count": runtime.inter_op_threads,
                "execution_mode": 1 if runtime.execution_mode == "parallel" else 0,
                # An isolated model's child always runs without the arena (inference.isolation).
                "enable_mem_arena": int(runtime.enable_cpu_mem_arena and not isolated),
                "execution_providers": ",".join(runtime.execution_providers),
            }
        ),
        "model_warmup": _warmup(model, runtime, is_batched),
    }
    if is_batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": [model.preferred_batch_size] if model.preferred_batch_size else [],
            "max_queue_delay_microseconds": model.max_queue_delay_microseconds,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": model.default_timeout_microseconds,
                "allow_timeout_override": False,
                "max_queue_size": model.max_queue_size,
            },
        }
    return config
