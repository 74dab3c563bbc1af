"""A node of a multi-machine test: one of our granian server processes on 127.0.0.1, with its
own environment and log, and the HTTP calls the tests make to it (urllib: a real client); and
`poll`, to wait for what the nodes and workers do."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests import granian_server

PORTS = range(8400, 8500)


class Node:
    """Started once `ready_path` answers 200 (/api/v1/live for a node that must not be ready)."""

    def __init__(self, env: dict[str, str], log: Path, *, ready_path: str = "/api/v1/ready"):
        self.port = granian_server.free_port(within=PORTS)
        self.log = log
        self.process = granian_server.start(env, log, port=self.port, ready_path=ready_path)

    def call(self, method: str, path: str, *, key: str = "", body: bytes | None = None, content_type: str = ""):
        """(status, headers (case-insensitive), the body's bytes)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our loopback server)
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def request(self, method: str, path: str, *, key: str = "", body: bytes | None = None, content_type: str = ""):
        """(status, the JSON body)."""
        status, _, content = self.call(method, path, key=key, body=body, content_type=content_type)
        return status, json.loads(content or b"null")

    def get(self, path: str, key: str = ""):
        return self.request("GET", path, key=key)

    def raw(self, path: str, *, key: str = "") -> tuple[int, bytes]:
        """GET `path`: (status, the body's bytes), for files."""
        status, _, content = self.call("GET", path, key=key)
        return status, content

    def post_json(self, path: str, key: str, payload: dict):
        return self.request("POST", path, key=key, body=json.dumps(payload).encode(), content_type="application/json")

    def upload(self, path: str, key: str, fields: dict[str, str], data: bytes, *, field="file", filename="model.onnx"):
        """A multipart POST of `fields` and `data` as the file `field`: (status, the JSON body)."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, key=key, body=body, content_type=f"multipart/form-data; boundary={boundary}")

    def upload_model(self, key: str, name: str, version: str, data: bytes):
        return self.upload("/api/v1/models", key, {"name": name, "version": version}, data)

    def upload_job(self, key: str, model_id: str, rows: bytes):
        return self.upload("/api/v1/jobs", key, {"model_id": model_id}, rows, field="input_file", filename="rows.jsonl")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return granian_server.log_tail(self.log, lines)

    def stop(self) -> int:
        """SIGTERM (a graceful stop: in-flight requests finish, history is written)."""
        return granian_server.stop(self.process, timeout=30)


def poll(check, *, bound: float, what: str, interval: float = 0.05):
    """Call check() until it returns something truthy, and return that; fail the test if that
    takes more than `bound` seconds (a safety net for a loaded machine, not a timing claim)."""
    deadline = time.monotonic() + bound
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not seen within {bound}s"
        time.sleep(interval)
