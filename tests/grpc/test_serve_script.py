"""The image's command, deploy/serve.sh, as docker-compose and the Kubernetes API pod run it: both
doors from one container, /metrics counting both, and the container ending as a whole."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient._plugin import InferenceServerClientPlugin

from tests import granian_server
from tests.grpc import grpc_server
from tests.grpc.conftest import server_environment
from tests.v2.conftest import live_template

SCRIPT = granian_server.BASE_DIR / "deploy" / "serve.sh"
START_TIMEOUT_SECONDS = 90


class PerfAnalyzerHeader(InferenceServerClientPlugin):
    """The metadata Triton's perf_analyzer sends for `-H "authorization: Bearer <key>"`: it keeps
    the blank after the colon (" Bearer <key>")."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, request):
        request.headers["authorization"] = f" Bearer {self.key}"


@pytest.fixture
def script(tmp_path_factory, worker_id):
    """deploy/serve.sh started with one process per server; yields (process, http, grpc, keys)."""
    template, keys = live_template(tmp_path_factory, worker_id)
    workdir = tmp_path_factory.getbasetemp() / "serve-script"
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    http_port, grpc_port = granian_server.free_port(), granian_server.free_port()
    environment = {
        **server_environment(workdir),
        # granian and python by name, as in the image: this virtual environment's.
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "WEB_WORKERS": "1",
        "GRPC_WORKERS": "1",
    }
    with open(workdir / "serve.log", "wb") as log:
        process = subprocess.Popen(
            ["bash", str(SCRIPT)],
            cwd=granian_server.BASE_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    http, address = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    try:
        wait_until_serving(process, http, address, workdir / "serve.log")
        yield process, http, address, keys
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until_serving(process: subprocess.Popen, http: str, address: str, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, granian_server.log_tail(log)
            if answers(f"{http}/api/v1/live") and grpc_server.health(stub) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
    raise AssertionError(f"deploy/serve.sh did not serve both doors:\n{granian_server.log_tail(log)}")


def answers(url: str, key: str | None = None) -> bytes | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.read()
    except OSError:
        return None


def servers_of(process: subprocess.Popen) -> dict[str, psutil.Process]:
    """The script's two servers, by what they run."""
    found = {}
    for child in psutil.Process(process.pid).children():
        command = " ".join(child.cmdline())
        found["grpc" if "serve_grpc" in command else "http"] = child
    return found


def test_one_container_serves_both_doors_and_counts_both_in_the_metrics(script):
    process, http, address, keys = script
    client = grpcclient.InferenceServerClient(address)
    client.register_plugin(PerfAnalyzerHeader(keys["predict"]))
    x, k = np.ones((1, 2), np.float32), np.array([3], np.int64)
    inputs = []
    for name, array, datatype in (("X", x, "FP32"), ("K", k, "INT64")):
        inputs.append(grpcclient.InferInput(name, list(array.shape), datatype))
        inputs[-1].set_data_from_numpy(array)
    answer = client.infer("two-inputs", inputs, parameters={"skip_cache": True})
    assert answer.get_response().model_name == "two-inputs"
    client.close()

    # The gRPC process adds its counts to the shared files within inference.metrics.FLUSH_SECONDS.
    deadline = time.monotonic() + 30
    while True:
        metrics = answers(f"{http}/metrics", keys["read"]).decode()
        counted = [line for line in metrics.splitlines() if line.startswith("modelforge_requests_total{")]
        if any('model="two-inputs"' in line and 'outcome="ok"' in line for line in counted):
            break
        assert time.monotonic() < deadline, counted
        time.sleep(0.1)


def test_sigterm_stops_both_servers(script):
    process, http, address, _keys = script
    servers = servers_of(process)
    assert set(servers) == {"http", "grpc"}
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    gone, alive = psutil.wait_procs(servers.values(), timeout=30)
    assert alive == []
    assert answers(f"{http}/api/v1/live") is None


def test_a_server_that_dies_takes_the_container_down_with_it(script):
    """So that the orchestrator restarts the container, rather than a pod whose other door alone
    passes its probe."""
    process, http, address, _keys = script
    servers = servers_of(process)
    servers["grpc"].kill()
    assert process.wait(timeout=60) != 0
    gone, alive = psutil.wait_procs([servers["http"]], timeout=30)
    assert alive == []
    assert answers(f"{http}/api/v1/live") is None
