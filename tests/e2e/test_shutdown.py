"""The production server (granian, `make serve`) writes buffered history when stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from registry.demo import build_iris_onnx

BASE_DIR = Path(settings.BASE_DIR)
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def count_predictions(env: dict) -> int:
    code = "from inference.models import Prediction; print(Prediction.objects.count())"
    return int(manage(env, "shell", "--no-imports", "-c", code).strip().splitlines()[-1])


def test_sigterm_writes_buffered_history_and_answers_every_admitted_request(tmp_path):
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "shutdown-test-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "HISTORY_FLUSH_INTERVAL_SECONDS": "600",  # nothing is written before the shutdown
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "iris-1.0.0.onnx").write_bytes(build_iris_onnx())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "e2e", "--scopes", "predict").strip()

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
            "modelforge_site.wsgi:application",
        ],  # fmt: skip
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ready", timeout=2)  # noqa: S310
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        body = json.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": True}).encode()
        url = f"http://127.0.0.1:{port}/api/v1/models/by-name/iris/predict"
        for _ in range(20):
            request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.status == 200
        assert count_predictions(env) == 0  # still buffered in the server processes
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert count_predictions(env) == 20
