"""The gRPC server processes (``manage.py serve_grpc``): N worker processes sharing one port
with SO_REUSEPORT, as the web server runs one per core, each a grpc server with a thread pool.

Each worker serves ``inference.GRPCInferenceService`` (inference.grpc.service) and the standard
``grpc.health.v1.Health`` service, which answers SERVING when /api/v1/ready would answer 200
(the same checks: inference.v2.metadata.not_ready_reason) for the whole server ("") and for
the inference service. Messages over MAX_REQUEST_BODY_BYTES are refused by grpc itself
(RESOURCE_EXHAUSTED) before any of our code runs.

Shutdown, as the HTTP side's (core.shutdown): SIGTERM marks the process as stopping (the health
service answers NOT_SERVING, ServerReady false), waits SHUTDOWN_DRAIN_SECONDS if set, then stops
accepting calls and lets those in flight finish within GRPC_SHUTDOWN_GRACE_SECONDS
(``server.stop(grace)``). With several workers the parent only supervises: it forwards SIGTERM
(and SIGINT) to the workers and waits for them, and replaces a worker that dies meanwhile.

The parent forks the workers before any grpc object exists in it (grpc's own multiprocessing
rule: a process must not fork once its gRPC runtime has started), holding the port with an
unlistened SO_REUSEPORT socket so that a port in use fails at once and the workers bind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
from django.conf import settings
from django.db import close_old_connections, connections
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from core import shutdown
from inference.grpc.service import SERVICE, Door, InferenceService
from inference.sessions import preload_flagged
from inference.v2 import metadata

logger = logging.getLogger(__name__)


class ReadinessHealth(health.aio.HealthServicer):
    """grpc.health.v1 with readiness worked out at each Check (as /api/v1/ready is), on a thread
    of the executor: the checks read the database."""

    NAMES = ("", SERVICE.full_name)

    def __init__(self, executor: futures.Executor) -> None:
        super().__init__()
        self.executor = executor

    async def start(self) -> None:
        for name in self.NAMES:
            await self.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def Check(self, request, context):
        if request.service in self.NAMES:
            ready = await asyncio.get_running_loop().run_in_executor(self.executor, _ready)
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in self.NAMES:
                await self.set(name, status)
        return await super().Check(request, context)


def _ready() -> bool:
    try:
        return metadata.not_ready_reason() is None  # NOT_SERVING from SIGTERM on
    finally:
        close_old_connections()


def build(address: str, *, threads: int, reuse_port: bool) -> tuple[grpc.aio.Server, ReadinessHealth]:
    """An asyncio grpc server bound to ``address`` (not started), and its health service; the
    calls are answered on a pool of ``threads`` threads (inference.grpc.service.Door). Call it
    within the event loop that serves."""
    executor = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc")
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.MAX_REQUEST_BODY_BYTES),
            ("grpc.max_send_message_length", -1),
            # grpc turns SO_REUSEPORT on by default: one worker must fail on a port in use.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    server.add_generic_rpc_handlers((Door(InferenceService(), executor).handler(),))
    checks = ReadinessHealth(executor)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(address)  # raises RuntimeError when it cannot bind
    return server, checks


def serve_worker(address: str, *, threads: int, grace: float, reuse_port: bool) -> None:
    """Serve on ``address`` in this process until SIGTERM or SIGINT; then drain and return."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    shutdown.install()  # in front of ours for SIGTERM: stopping (NOT_SERVING), then the drain
    # As each web server process does (modelforge_site.wsgi): warm the flagged models' sessions
    # in the background, and keep the start-up heap out of the garbage collector's way.
    threading.Thread(target=preload_flagged, name="preload-sessions", daemon=True).start()
    gc.collect()
    gc.freeze()
    asyncio.run(_serve(address, stop, threads=threads, grace=grace, reuse_port=reuse_port))
    logger.info("gRPC worker stopped", extra={"pid": os.getpid()})


async def _serve(address: str, stop: threading.Event, *, threads: int, grace: float, reuse_port: bool) -> None:
    server, checks = build(address, threads=threads, reuse_port=reuse_port)
    await checks.start()
    await server.start()
    logger.info("gRPC worker serving", extra={"address": address, "pid": os.getpid(), "threads": threads})
    while not stop.is_set():  # the signal handlers run on this thread between the loop's waits
        await asyncio.sleep(0.2)
    shutdown.begin()
    await checks.enter_graceful_shutdown()
    logger.info("gRPC worker stopping; calls in flight may finish", extra={"grace_seconds": grace})
    await server.stop(grace)


def serve(host: str, port: int, *, workers: int, threads: int, grace: float) -> None:
    """Serve with ``workers`` processes (one: in this process) until SIGTERM or SIGINT."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if workers <= 1:
        serve_worker(address, threads=threads, grace=grace, reuse_port=False)
        return
    with _reserve(host, port):
        connections.close_all()  # the workers open their own
        fork = multiprocessing.get_context("fork")
        stopping = threading.Event()
        running: list = []

        def start() -> None:
            worker = fork.Process(
                target=serve_worker,
                args=(address,),
                kwargs={"threads": threads, "grace": grace, "reuse_port": True},
                name="grpc-worker",
            )
            worker.start()
            running.append(worker)

        def forward(signum, frame) -> None:
            stopping.set()
            for worker in running:
                if worker.exitcode is None:
                    os.kill(worker.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for _ in range(workers):
            start()
        while running:
            multiprocessing.connection.wait([worker.sentinel for worker in running], timeout=1)
            for worker in [worker for worker in running if worker.exitcode is not None]:
                running.remove(worker)
                if not stopping.is_set():
                    logger.error("gRPC worker died; starting another", extra={"exitcode": worker.exitcode})
                    start()


@contextlib.contextmanager
def _reserve(host: str, port: int) -> Iterator[None]:
    """Hold ``host:port`` with SO_REUSEPORT, unlistened, while the workers serve on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, port))
        yield
