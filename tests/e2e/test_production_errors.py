"""With DEBUG=false (production), an unexpected server fault is a JSON 500 that says nothing of
its cause: no traceback, no exception name, no SQL. The fault here is real: the production
server (granian) runs against a database it cannot open."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from tests import granian_server

pytestmark = pytest.mark.e2e

GENERIC = "An unexpected error occurred; it has been logged."
LEAKS = ("Traceback", "OperationalError", "sqlite", 'File "', "SELECT")


def fetch(url: str, **kwargs):
    """(status, headers (case-insensitive), body)"""
    request = urllib.request.Request(url, **kwargs)  # noqa: S310 (http://127.0.0.1 only)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_a_server_fault_is_a_json_500_without_a_traceback(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "production-errors-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'missing-folder' / 'db.sqlite3'}",  # cannot be opened
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
    }
    port = granian_server.free_port()
    server = granian_server.start(env, tmp_path / "server.log", port=port, threads=None, ready_path="/api/v1/live")
    base = f"http://127.0.0.1:{port}"
    key = {"Authorization": "Bearer abcdefgh.not-a-real-secret"}
    try:
        for url, data in (
            (f"{base}/api/v1/models", None),  # through Django and DRF
            (f"{base}/api/v1/models/by-name/iris/predict", b'{"input_data": {"X": [[1, 2, 3, 4]]}}'),  # fast path
        ):
            status, headers, body = fetch(url, data=data, headers=key)
            assert status == 500, body
            assert headers["Content-Type"].startswith("application/json")
            assert json.loads(body) == {"code": "server_error", "detail": GENERIC}
            assert not any(leak.encode() in body for leak in LEAKS)

        status, _, body = fetch(f"{base}/v2/models/iris/infer", data=b"{}", headers=key)
        assert status == 500
        assert json.loads(body)["code"] == "server_error"
        assert set(json.loads(body)) == {"error", "code"}
        assert not any(leak.encode() in body for leak in LEAKS)

        assert fetch(f"{base}/api/v1/ready")[0] == 503  # and the probe says why it is not ready
    finally:
        granian_server.stop(server, timeout=30)
