"""GET /v2/models/{name}[/versions/{v}]/config: the model configuration in Triton's shape, checked
against Triton's own schema (model_config.proto, as tritonclient ships it) and read with the real
Triton client."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from tests.inference.factories import make_int64_model, make_iris_model, make_scaled_model, make_string_model
from tests.v2.test_views import client

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(make_key):
    return client(make_key("predict")[1])


def strict_parse(config: dict):
    """The config as Triton's ModelConfig message: unknown fields or wrong types fail."""
    return json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=False)


def test_unbatched_model_config_is_a_valid_triton_model_config(ready_model, web):
    ready_model(make_scaled_model(2.0), name="scaled")
    response = web.get("/v2/models/scaled/config")
    assert response.status_code == 200
    config = response.json()
    assert config["name"] == "scaled"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    # Not batched: max_batch_size 0 and the whole shape, batch dimension included.
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1, 3]}]
    assert config["output"] == [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1, 3]}]
    assert "dynamic_batching" not in config
    assert config["instance_group"] == [{"name": "scaled", "kind": "KIND_CPU", "count": 1}]
    assert config["version_policy"] == {"all": {}}
    # The server's defaults (ORT_GRAPH_OPTIMIZATION=all, one thread each) as Triton's backend spells them.
    assert config["optimization"] == {"graph": {"level": 0}}
    assert config["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    assert config["parameters"]["execution_mode"] == {"string_value": "0"}
    assert config["parameters"]["execution_providers"] == {"string_value": "CPUExecutionProvider"}
    # One warm-up run on zeros by default.
    assert config["model_warmup"] == [
        {
            "name": "zero_warmup",
            "batch_size": 0,
            "count": 1,
            "inputs": {"X": {"data_type": "TYPE_FP32", "dims": [1, 3], "zero_data": True}},
        }
    ]
    message = strict_parse(config)
    assert message.max_batch_size == 0
    assert list(message.input[0].dims) == [-1, 3]
    assert web.get("/v2/models/scaled/versions/1.0.0/config").json() == config


def test_batched_model_config_leaves_out_the_batch_dimension(ready_model, web, manage_client):
    model = ready_model(make_scaled_model(2.0), name="scaled")
    response = manage_client.patch(
        f"/api/v1/models/{model['id']}",
        {
            "batching": {
                "enabled": True,
                "max_batch_size": 32,
                "max_queue_delay_microseconds": 700,
                "preferred_batch_size": 8,
                "max_queue_size": 50,
                "default_timeout_microseconds": 2_000_000,
            }
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    config = web.get("/v2/models/scaled/config").json()
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["output"] == [{"name": "Y", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [8],
        "max_queue_delay_microseconds": 700,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 2_000_000,
            "allow_timeout_override": False,
            "max_queue_size": 50,
        },
    }
    assert config["model_warmup"][0]["batch_size"] == 1
    assert config["model_warmup"][0]["inputs"]["X"]["dims"] == [3]
    message = strict_parse(config)
    assert message.dynamic_batching.default_queue_policy.max_queue_size == 50


def test_config_shows_the_models_runtime_settings_and_warmup(ready_model, web, manage_client):
    model = ready_model(make_scaled_model(2.0), name="scaled")
    response = manage_client.patch(
        f"/api/v1/models/{model['id']}",
        {
            "runtime": {
                "graph_optimization_level": "basic",
                "intra_op_threads": 2,
                "inter_op_threads": 3,
                "execution_mode": "parallel",
                "enable_cpu_mem_arena": False,
                "sessions_per_process": 3,
            },
            "warmup": {"count": 4, "data": "random"},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    config = web.get("/v2/models/scaled/config").json()
    assert config["optimization"] == {"graph": {"level": -1}}
    assert config["instance_group"][0]["count"] == 3
    parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
    assert parameters == {
        "intra_op_thread_count": "2",
        "inter_op_thread_count": "3",
        "execution_mode": "1",
        "enable_mem_arena": "0",
        "execution_providers": "CPUExecutionProvider",
    }
    warmup = config["model_warmup"][0]
    assert (warmup["count"], warmup["inputs"]["X"].get("random_data")) == (4, True)
    strict_parse(config)


def test_string_inputs_are_type_string(ready_model, web):
    ready_model(make_string_model(), name="strings")
    config = web.get("/v2/models/strings/config").json()
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    strict_parse(config)


def test_config_errors_are_the_protocols(ready_model, web, make_key):
    ready_model(make_scaled_model(2.0), name="scaled")
    unknown = web.get("/v2/models/nope/config")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Unknown model 'nope'.", "code": "model_not_found"}
    assert web.get("/v2/models/scaled/versions/9.9.9/config").status_code == 404
    assert client().get("/v2/models/scaled/config").status_code == 401
    wrong_scope = client(make_key("read")[1]).get("/v2/models/scaled/config")
    assert wrong_scope.status_code == 403
    assert set(wrong_scope.json()) == {"error", "code"}


@pytest.mark.e2e
def test_tritonclient_reads_the_config(triton):
    config = triton.get_model_config("iris")
    assert config["name"] == "iris"
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    assert [output["name"] for output in config["output"]] == ["label", "probabilities"]
    assert triton.get_model_config("iris", "1.0.0") == config
    strict_parse(config)


def test_iris_model_config_parses(ready_model, web):
    ready_model(make_iris_model(zipmap=True), name="iris")
    config = web.get("/v2/models/iris/config").json()
    # The ZipMap output (a sequence of maps) is no tensor: left out, as in the metadata.
    assert [output["name"] for output in config["output"]] == ["output_label"]
    strict_parse(config)


def test_a_batched_output_with_only_the_batch_dimension_is_dims_1_reshaped(ready_model, web, manage_client):
    model = ready_model(make_int64_model(), name="ints")
    manage_client.patch(f"/api/v1/models/{model['id']}", {"batching": {"enabled": True}}, format="json")
    config = web.get("/v2/models/ints/config").json()
    # S is the row sums, shape [batch]: nothing is left once the batch dimension is left out.
    assert config["output"] == [
        {"name": "Y", "data_type": "TYPE_INT64", "dims": [2]},
        {"name": "S", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
    ]
    assert list(strict_parse(config).output[1].reshape.shape) == []
