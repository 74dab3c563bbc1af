"""The production server (granian, as `make serve`) against large and slow request bodies, over
real sockets: a body that will be refused is never read (nothing reaches the model volume, the
answer comes while the client is still sending), a body that arrives too slowly is cut off with
408, and the health probes keep answering while fifty slow clients are connected."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from registry.demo import build_iris_onnx
from tests import granian_server

pytestmark = pytest.mark.e2e

BOUNDARY = "slow-client-boundary"
PREDICT = "/api/v1/models/by-name/iris/predict"
ROW = json.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": True}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """granian with one worker of four threads, as `make serve` runs each worker; bodies must
    arrive within 2 s (plus 1 s per 64 KiB), at most two threads wait on bodies."""
    tmp_path = tmp_path_factory.mktemp("slow-clients")
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "slow-clients-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "BODY_READ_TIMEOUT_SECONDS": "2",
        "BODY_READ_SLOTS": "2",
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "iris-1.0.0.onnx").write_bytes(build_iris_onnx())
    granian_server.manage(env, "migrate", "--noinput")
    granian_server.manage(env, "import_models", str(source))
    predict_key = granian_server.manage(env, "create_api_key", "--name", "e2e", "--scopes", "predict").stdout.strip()
    port = granian_server.free_port()
    process = granian_server.start(env, tmp_path / "server.log", port=port, threads=4, ready_path="/api/v1/live")
    try:
        yield {
            "port": port,
            "predict_key": predict_key,
            "tmp": Path(env["MODEL_STORAGE_PATH"]) / "tmp",
            "log": tmp_path / "server.log",
        }
    finally:
        granian_server.stop(process)


def head(method: str, path: str, length: int, *, key: str | None = None, content_type: str = "application/json"):
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
    ]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict, bytes]:
    """(status, headers, body) of the one response on `sock` (the server closes or sends
    Content-Length bytes)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed without a response: {data!r}"
        data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def probe(port: int, path: str = "/api/v1/live") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock)[0]


def predict(port: int, key: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head("POST", PREDICT, len(ROW), key=key) + ROW)
        return read_response(sock)[0]


def large_refused_upload(port: int, path: str, *, key: str | None = None) -> tuple[int, dict, bytes, int, int]:
    """A 100 MB multipart POST: the response, what the client had sent when it came, and the
    whole announced length."""
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    total = 100 * 1024 * 1024
    sent = [0]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head("POST", path, total, key=key, content_type=f"multipart/form-data; boundary={BOUNDARY}"))
        sock.sendall(part)
        chunk = b"\0" * (256 * 1024)

        def send_all():
            try:
                while sent[0] < total - len(part):
                    sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # the server closed the connection: the rest is dropped

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        status, headers, body = read_response(sock)
        at_response = sent[0]
    sender.join(30)
    return status, headers, body, at_response, total


def test_large_bodies_that_will_be_refused_are_not_read(server):
    port = server["port"]
    for path, key, status, code in (
        ("/api/v1/live", None, 405, "method_not_allowed"),
        (f"/api/v1/models/{uuid.uuid4()}/upload", None, 401, "not_authenticated"),
        (f"/api/v1/models/{uuid.uuid4()}/upload", "abcdefgh.0123456789abcdef0123456789abcdef", 401, "invalid_api_key"),
        (f"/api/v1/models/{uuid.uuid4()}/upload", server["predict_key"], 403, "missing_scope"),
        ("/api/v1/models", server["predict_key"], 403, "missing_scope"),
    ):
        got, headers, body, sent_before_answer, total = large_refused_upload(port, path, key=key)
        assert (got, json.loads(body)["code"]) == (status, code), body
        assert headers.get("connection") == "close"
        assert sent_before_answer < total // 2  # answered while the client was still sending
        assert list(server["tmp"].iterdir()) == []
    assert probe(port) == 200


def trickle(port: int, request_head: bytes, results: list, *, stop: threading.Event) -> None:
    """Send the head, then the body a byte at a time every 0.2 s, until an answer comes (its
    status goes to `results`) or `stop` is set (then 0)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request_head)
            while not stop.is_set():
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    results.append(read_response(sock)[0])
                    return
                try:
                    sock.sendall(b"{")
                except OSError:
                    results.append(read_response(sock)[0])
                    return
    except (OSError, AssertionError):
        results.append(-1)
        return
    results.append(0)


def test_probes_answer_while_fifty_slow_clients_are_connected(server):
    port = server["port"]
    stop = threading.Event()
    refused: list[int] = []  # unauthenticated uploads: 401 at once
    slow: list[int] = []  # authenticated predicts trickling a 10 KB body: 408, or 503 when every slot is taken
    clients = [
        threading.Thread(
            target=trickle,
            args=(
                port,
                head(
                    "POST",
                    f"/api/v1/models/{uuid.uuid4()}/upload",
                    10_000_000,
                    content_type=f"multipart/form-data; boundary={BOUNDARY}",
                )
                + f"--{BOUNDARY}\r\n".encode(),
                refused,
            ),
            kwargs={"stop": stop},
        )
        for _ in range(25)
    ] + [
        threading.Thread(
            target=trickle,
            args=(port, head("POST", PREDICT, 10_000, key=server["predict_key"]), slow),
            kwargs={"stop": stop},
        )
        for _ in range(25)
    ]
    for client in clients:
        client.start()
    try:
        probes = []
        for _ in range(20):
            probes.append(probe(port))
            probes.append(probe(port, "/v2/health/live"))
        assert probes == [200] * 40
        deadline = time.monotonic() + 120  # a safety net: each slow client is answered within seconds
        while len(refused) + len(slow) < 50 and time.monotonic() < deadline:
            assert probe(port) == 200
        assert refused == [401] * 25
        assert len(slow) == 25 and set(slow) <= {408, 503}, slow
        assert 408 in slow  # the ones that got a slot were cut off at their deadline
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    assert predict(port, server["predict_key"]) == 200  # and the server serves on


def test_a_slow_authenticated_body_gets_408_and_the_server_serves_on(server):
    port = server["port"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head("POST", PREDICT, len(ROW), key=server["predict_key"]) + ROW[:10])
        status, headers, body = read_response(sock)  # nothing more is sent
    assert (status, json.loads(body)["code"]) == (408, "request_timeout")
    assert headers.get("connection") == "close"
    assert predict(port, server["predict_key"]) == 200
    assert probe(port) == 200
