"""The production server (granian, `make serve`) stopped with SIGTERM: requests in progress
finish, readiness turns 503, buffered history is written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from registry.demo import build_iris_onnx
from tests.inference.slow_models import make_sleepy_model

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


def start_granian(env: dict, port: int) -> subprocess.Popen:
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
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ready", timeout=2)  # noqa: S310
            return server
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


def status_of(url: str, **kwargs) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, **kwargs), timeout=30) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_sigterm_drains_readiness_503_while_admitted_requests_finish(tmp_path):
    """With SHUTDOWN_DRAIN_SECONDS, a SIGTERM to granian's main process (what an orchestrator
    sends) turns readiness 503 in every worker at once; the workers go on answering during the
    drain, the slow requests in progress all end in 200, then the server exits and the history
    of every request is written."""
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "shutdown-test-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "HISTORY_FLUSH_INTERVAL_SECONDS": "600",
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "SHUTDOWN_DRAIN_SECONDS": "3",
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "sleepy-1.0.0.onnx").write_bytes(make_sleepy_model())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "e2e", "--scopes", "predict").strip()
    port = free_port()
    server = start_granian(env, port)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/models/by-name/sleepy/predict"
    slow = json.dumps({"input_data": {"X": [[0.1, 0.1, 0.1, 0.1]]}, "skip_cache": True}).encode()  # seconds of work
    quick = json.dumps({"input_data": {"X": [[0.0, 0.0, 0.0, 0.0]]}, "skip_cache": True}).encode()
    statuses: list[int] = []
    try:
        workers = [
            threading.Thread(target=lambda: statuses.append(status_of(url, data=slow, headers=headers)))
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        time.sleep(0.5)  # the requests are in progress (each runs for seconds)
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while status_of(f"{base}/api/v1/ready") != 503:  # each worker learns of it as the signal lands
            assert time.monotonic() < deadline, "readiness never turned 503"
            time.sleep(0.05)
        assert status_of(f"{base}/v2/health/ready") == 503
        assert status_of(f"{base}/api/v1/ready") == 503  # whichever worker answers
        assert status_of(url, data=quick, headers=headers) == 200  # still serving while draining
        for worker in workers:
            worker.join(60)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert statuses == [200, 200, 200, 200]
    assert count_predictions(env) == 5
