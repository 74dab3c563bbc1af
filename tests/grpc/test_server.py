"""The gRPC server as an operator runs it: several workers on one port, a graceful drain on
SIGTERM, throttles with retry information, and the client's deadline bounding the run."""

from __future__ import annotations

import shutil
import signal
import socket

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests import granian_server
from tests.grpc import grpc_server
from tests.inference.slow_models import make_sleepy_model
from tests.registry.onnx_factories import make_iris_model
from tests.v2 import live_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECONDS_OF_WORK = [[0.1, 0.1, 0.1, 0.1]]  # about two seconds for the sleepy model
MINUTES_OF_WORK = [[1.0, 1.0, 1.0, 1.0]]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpc-server")
    models = {"sleepy": make_sleepy_model(), "iris": make_iris_model(zipmap=False)}
    keys = live_server.build_template(folder / "template", models, lock=folder / "template.lock")
    return folder / "template", keys


def start(template, workdir, *, workers: int, threads: int = 4, **settings):
    source, keys = template
    shutil.copytree(source, workdir)
    environment = {**live_server.server_environment(workdir), **settings}
    port = granian_server.free_port()
    process = grpc_server.start(environment, workdir / "grpc.log", port=port, workers=workers, threads=threads)
    return process, f"127.0.0.1:{port}", keys, environment


def infer(model: str, rows) -> service_pb2.ModelInferRequest:
    x = np.array(rows, dtype=np.float32)
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=list(x.shape))
    return service_pb2.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()], parameters={"skip_cache": _true()}
    )


def _true() -> service_pb2.InferParameter:
    return service_pb2.InferParameter(bool_param=True)


def test_sigterm_drains_the_call_in_flight(template, tmp_path):
    # Two workers behind one port; a drain period, during which health says NOT_SERVING.
    process, address, keys, _ = start(template, tmp_path / "server", workers=2, SHUTDOWN_DRAIN_SECONDS="2")
    metadata = (("authorization", f"Bearer {keys['predict']}"),)
    # One channel is one connection, to one worker, which receives the calls in the order sent.
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert grpc_server.health(health) == health_pb2.HealthCheckResponse.SERVING
        assert grpc_server.health(health, "inference.GRPCInferenceService") == health_pb2.HealthCheckResponse.SERVING
        slow = stub.ModelInfer.future(infer("sleepy", SECONDS_OF_WORK), metadata=metadata, timeout=60)
        # Answered after the slow call was received (sent before it on the same connection).
        assert stub.ModelInfer(infer("iris", [[5.1, 3.5, 1.4, 0.2]]), metadata=metadata, timeout=30).outputs
        process.send_signal(signal.SIGTERM)
        status = health_pb2.HealthCheckResponse.SERVING
        while status == health_pb2.HealthCheckResponse.SERVING:
            status = grpc_server.health(health)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING  # during the drain
        response = slow.result(timeout=60)
    output = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, 4)
    np.testing.assert_array_equal(output, np.array(SECONDS_OF_WORK, np.float32))
    assert process.wait(timeout=60) == 0


def test_throttled_calls_carry_retry_info(template, tmp_path):
    process, address, keys, _ = start(template, tmp_path / "server", workers=1, THROTTLE_RATE_PREDICT="2/min")
    metadata = (("authorization", f"Bearer {keys['predict']}"),)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(2):
                stub.ModelInfer(infer("iris", [[5.1, 3.5, 1.4, 0.2]]), metadata=metadata, timeout=30)
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(infer("iris", [[5.1, 3.5, 1.4, 0.2]]), metadata=metadata, timeout=30)
    finally:
        grpc_server.stop(process)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.value.details().startswith("This API key sent more than 2 predict requests in 60 s. Retry in ")
    trailing = dict(error.value.trailing_metadata())
    assert trailing["modelforge-code"] == "throttled"
    status = rpc_status.from_call(error.value)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert 0 < info.retry_delay.seconds <= 60
    assert info.retry_delay.seconds == int(trailing["retry-after"])


def test_the_clients_deadline_stops_the_run(template, tmp_path):
    # One thread: the second call is answered only if the first call's run was stopped.
    process, address, keys, _ = start(
        template, tmp_path / "server", workers=1, threads=1, INFERENCE_TIMEOUT_SECONDS="600"
    )
    metadata = (("authorization", f"Bearer {keys['predict']}"),)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(infer("sleepy", MINUTES_OF_WORK), metadata=metadata, timeout=1)
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            response = stub.ModelInfer(infer("iris", [[5.1, 3.5, 1.4, 0.2]]), metadata=metadata, timeout=60)
            assert [output.name for output in response.outputs] == ["label", "probabilities"]
    finally:
        grpc_server.stop(process)


def test_a_port_in_use_fails_at_start(template, tmp_path):
    source, _ = template
    shutil.copytree(source, tmp_path / "server")
    environment = live_server.server_environment(tmp_path / "server")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = granian_server.manage(environment, "serve_grpc", "--port", str(port), "--workers", "2", check=False)
    assert done.returncode != 0
    assert f"Cannot serve on 127.0.0.1:{port}" in done.stderr
