"""The transports alone: a WSGI app for granian and a grpc.aio server that answer Triton's
metadata, config and infer calls with bytes recorded from ModelForge, doing nothing else.

bench/triton_perf.py --floor drives them with perf_analyzer as it drives ModelForge, so the
gap between the two transports (granian's Rust HTTP in front of WSGI; grpcio's asyncio server)
is measured apart from the serving exchange that both doors share.

    CANNED=<file.json> granian --interface wsgi ... bench.canned_servers:wsgi_app
    CANNED=<file.json> python bench/canned_servers.py <port> [--threads N]
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from concurrent import futures


def _canned() -> dict:
    with open(os.environ["CANNED"]) as source:
        recorded = json.load(source)
    return {key: base64.b64decode(value) for key, value in recorded.items()}


_HTTP: dict | None = None


def wsgi_app(environ, start_response):
    global _HTTP
    if _HTTP is None:
        _HTTP = _canned()
    path = environ["PATH_INFO"]
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length)
        body = _HTTP["http_infer"]
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", _HTTP["http_infer_header_length"].decode()),
        ]
    elif path.endswith("/config"):
        body, headers = _HTTP["http_config"], [("Content-Type", "application/json")]
    elif path.endswith("/ready") or path.startswith("/v2/health"):
        body, headers = b"", []
    elif path.rstrip("/") == "/v2":
        body, headers = _HTTP["http_server"], [("Content-Type", "application/json")]
    else:
        body, headers = _HTTP["http_metadata"], [("Content-Type", "application/json")]
    start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
    return [body]


async def serve_grpc(port: int, threads: int) -> None:
    import grpc
    from tritonclient.grpc import service_pb2

    canned = _canned()
    executor = futures.ThreadPoolExecutor(max_workers=threads)
    answers = {
        "ServerMetadata": canned["grpc_server"],
        "ModelMetadata": canned["grpc_metadata"],
        "ModelConfig": canned["grpc_config"],
        "ModelInfer": canned["grpc_infer"],
        "ModelReady": service_pb2.ModelReadyResponse(ready=True).SerializeToString(),
        "ServerReady": service_pb2.ServerReadyResponse(ready=True).SerializeToString(),
        "ServerLive": service_pb2.ServerLiveResponse(live=True).SerializeToString(),
    }

    def work(name: str, body: bytes) -> bytes:
        return answers[name]

    handlers = {}
    for name in answers:

        async def behaviour(body: bytes, context, name=name) -> bytes:
            # One hop to a thread and back, as ModelForge's door makes (inference.grpc.service).
            return await asyncio.get_running_loop().run_in_executor(executor, work, name, body)

        handlers[name] = grpc.unary_unary_rpc_method_handler(behaviour)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 4
    asyncio.run(serve_grpc(int(sys.argv[1]), threads))
