"""The gRPC door routes through an alias's rollout too: tritonclient against `manage.py
serve_grpc`, the rollout set through the REST server of the same database."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests import granian_server
from tests.grpc.conftest import grpc_for, server_environment, servers  # noqa: F401 (the live servers)
from tests.inference.factories import make_scaled_model

NAME = "grpc-rollout"


def _rest(servers, method: str, path: str, body: dict) -> dict:  # noqa: F811
    request = urllib.request.Request(  # noqa: S310 (our own loopback server)
        f"http://{servers.rest}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {servers.keys['manage']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def test_grpc_infer_by_name_goes_to_the_candidate_and_says_so_in_metadata(servers, grpc_for, tmp_path):  # noqa: F811
    source = tmp_path / "source"
    for version, factor in (("1.0.0", 1.0), ("1.1.0", 2.0)):
        folder = source / NAME / version
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(make_scaled_model(factor))
    granian_server.manage(server_environment(servers.workdir), "import_models", str(source))
    _rest(servers, "PUT", f"/api/v1/models/by-name/{NAME}/aliases/production", {"version": "1.0.0"})
    _rest(
        servers,
        "PUT",
        f"/api/v1/models/by-name/{NAME}/aliases/production/rollout",
        {"candidate_version": "1.1.0", "weight": 100},
    )

    client = grpc_for("predict")
    infer_input = grpcclient.InferInput("X", [1, 3], "FP32")
    infer_input.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    for version in ("", "production"):
        result = client.infer(NAME, [infer_input], model_version=version)
        assert result.get_response().model_version == "1.1.0"
        assert result.as_numpy("Y").tolist() == [[2.0, 4.0, 6.0]]
    pinned = client.infer(NAME, [infer_input], model_version="1.0.0")
    assert pinned.get_response().model_version == "1.0.0"

    # The trailing metadata says which version answered, as X-Model-Version does over HTTP.
    import grpc

    with grpc.insecure_channel(servers.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name=NAME)
        tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 3])
        tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
        _response, call = stub.ModelInfer.with_call(
            request, metadata=[("authorization", f"Bearer {servers.keys['predict']}"), ("x-routing-key", "k")]
        )
        assert dict(call.trailing_metadata())["model-version"] == "1.1.0"
