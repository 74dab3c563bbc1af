"""A real `manage.py serve_grpc` process for the end-to-end gRPC tests, beside the granian server
of the /v2 tests (tests.v2.live_server) on the same database and model store, so that one input
can be sent to both doors.

It runs as in production (DEBUG off, the settings from the environment), in its own session
(process group) so that a stop can kill its workers too, and is ready when the standard health
service answers SERVING.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import granian_server

START_TIMEOUT_SECONDS = 60


def start(env: dict[str, str], log: Path, *, port: int, workers: int = 1, threads: int = 4) -> subprocess.Popen:
    """Start the gRPC server on 127.0.0.1:`port`; return once its health check says SERVING.
    Raises RuntimeError with the log's tail if it exits first or is not ready in time."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve_grpc", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--threads", str(threads)],
            cwd=granian_server.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"serve_grpc exited with {process.returncode}:\n{granian_server.log_tail(log)}")
            if health(stub) == health_pb2.HealthCheckResponse.SERVING:
                return process
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"serve_grpc was not ready in {START_TIMEOUT_SECONDS}s:\n{granian_server.log_tail(log)}")


def health(stub: health_pb2_grpc.HealthStub, service: str = ""):
    """The health status of `service`, or None when the server does not answer."""
    try:
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError:
        return None


def stop(process: subprocess.Popen, *, timeout: float = 30) -> int:
    """SIGTERM the server (it drains), SIGKILL its group if it has not exited within `timeout`."""
    return granian_server.stop(process, timeout=timeout)
