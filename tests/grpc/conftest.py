"""Fixtures for the gRPC tests: the /v2 tests' models, served by granian (REST) and by
`manage.py serve_grpc` from one database, and real Triton clients of both kinds."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests import granian_server
from tests.grpc import grpc_server
from tests.v2 import live_server
from tests.v2.conftest import BearerKey, live_template


@dataclass
class Servers:
    rest: str  # host:port of the granian server
    grpc: str  # host:port of the gRPC server
    keys: dict[str, str]  # "predict", "read", "manage" -> raw key
    workdir: Path
    log: Path


def server_environment(workdir: Path) -> dict[str, str]:
    # Both servers write their metrics here: the REST server's /metrics counts gRPC calls too.
    return {**live_server.server_environment(workdir), "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus")}


@pytest.fixture(scope="session")
def servers(tmp_path_factory, worker_id):
    template, keys = live_template(tmp_path_factory, worker_id)  # the /v2 tests' own
    workdir = tmp_path_factory.getbasetemp() / "grpc-live"
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    (workdir / "prometheus").mkdir(exist_ok=True)
    environment = server_environment(workdir)
    rest_port, grpc_port = granian_server.free_port(), granian_server.free_port()
    rest = granian_server.start(
        environment, workdir / "rest.log", port=rest_port, ready_path="/v2/health/ready", timeout=60
    )
    try:
        log = workdir / "grpc.log"
        process = grpc_server.start(environment, log, port=grpc_port)
    except Exception:
        granian_server.stop(rest)
        raise
    yield Servers(f"127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", keys, workdir, log)
    grpc_server.stop(process)
    granian_server.stop(rest)


@pytest.fixture
def grpc_for(servers):
    """grpc_for("predict") -> a tritonclient.grpc client sending a key with that scope (None: no key)."""
    clients = []

    def _client(scope: str | None = "predict") -> grpcclient.InferenceServerClient:
        client = grpcclient.InferenceServerClient(servers.grpc)
        if scope is not None:
            client.register_plugin(BearerKey(servers.keys[scope]))
        clients.append(client)
        return client

    yield _client
    for client in clients:
        client.close()


@pytest.fixture
def triton_grpc(grpc_for):
    return grpc_for("predict")


@pytest.fixture
def triton_rest(servers):
    client = httpclient.InferenceServerClient(servers.rest)
    client.register_plugin(BearerKey(servers.keys["predict"]))
    yield client
    client.close()


@pytest.fixture
def channel(servers):
    """A plain grpc channel to the server, for calls tritonclient would not make."""
    with grpc.insecure_channel(servers.grpc) as opened:
        yield opened
