"""The production server (granian, `make serve`) stopped with SIGTERM: requests in progress
finish, readiness turns 503, buffered history is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from registry.demo import build_iris_onnx
from tests import granian_server
from tests.inference.slow_models import make_sleepy_model

pytestmark = pytest.mark.e2e


def count_predictions(env: dict) -> int:
    code = "from inference.models import Prediction; print(Prediction.objects.count())"
    return int(granian_server.manage(env, "shell", "--no-imports", "-c", code).stdout.strip().splitlines()[-1])


def prepared_server(tmp_path: Path, filename: str, model: bytes, **settings: str) -> tuple[dict, str]:
    """The production server's environment (DEBUG off, its own SQLite file and model store,
    no Redis or broker, history flushed only at exit), its database migrated with `model`
    imported, and a predict key: (environment, raw key)."""
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
        **settings,
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / filename).write_bytes(model)
    granian_server.manage(env, "migrate", "--noinput")
    granian_server.manage(env, "import_models", str(source))
    key = granian_server.manage(env, "create_api_key", "--name", "e2e", "--scopes", "predict").stdout.strip()
    return env, key


def test_sigterm_writes_buffered_history_and_answers_every_admitted_request(tmp_path):
    # History is flushed every ten minutes: nothing is written before the shutdown.
    env, key = prepared_server(tmp_path, "iris-1.0.0.onnx", build_iris_onnx())

    port = granian_server.free_port()
    log = tmp_path / "server.log"
    server = start_granian(env, port, log)
    try:
        body = json.dumps({"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": True}).encode()
        url = f"http://127.0.0.1:{port}/api/v1/models/by-name/iris/predict"
        for _ in range(20):
            request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.status == 200
        assert count_predictions(env) == 0  # still buffered in the server processes
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the main process and both workers
        stop(server, log)
    assert count_predictions(env) == 20


def start_granian(env: dict, port: int, log: Path) -> subprocess.Popen:
    """granian with two workers, once both serve. A worker sent SIGTERM while it is still
    starting (before it serves) is granian's own race and may never stop: wait for both
    workers to say they are past it (core.shutdown logs it)."""
    deadline = time.monotonic() + 90
    server = granian_server.start(env, log, port=port, workers=2, threads=None, ready_path="/api/v1/live", timeout=90)
    try:
        while log.read_text(errors="replace").count("granian worker ready for SIGTERM") < 2:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
    except AssertionError:
        granian_server.stop(server)
        raise
    return server


def stop(server: subprocess.Popen, log: Path) -> None:
    """Wait for a server sent SIGTERM to exit; fail with its log if it does not."""
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        pytest.fail("the server did not stop:\n" + log.read_text(errors="replace"))


def status_of(url: str, **kwargs) -> int:
    """The status of a request; 0 when the server does not accept the connection. The timeout is
    only a safety net: four seconds-long requests on two threads of a CPU-starved CI machine have
    taken over 30 s to answer."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, **kwargs), timeout=180) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:
        return 0


@pytest.mark.parametrize("drain", ["0", "3"])
def test_sigterm_admitted_requests_finish_and_readiness_turns_503(tmp_path, drain):
    """A SIGTERM to granian's main process (what an orchestrator sends): the slow requests in
    progress all end in 200, then the server exits and the history of every request is
    written. Without a drain granian closes its listener at once; with SHUTDOWN_DRAIN_SECONDS,
    readiness answers 503 in every worker while they go on serving for that long."""
    env, key = prepared_server(tmp_path, "sleepy-1.0.0.onnx", make_sleepy_model(), SHUTDOWN_DRAIN_SECONDS=drain)
    port = granian_server.free_port()
    log = tmp_path / "server.log"
    server = start_granian(env, port, log)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{base}/api/v1/models/by-name/sleepy/predict"
    # Seconds of work each. The sleepy model's Loop count comes from its input, so it runs in its
    # isolated process, one request at a time per server process: four must fit the client's 30 s.
    slow = json.dumps({"input_data": {"X": [[0.03, 0.03, 0.03, 0.03]]}, "skip_cache": True}).encode()
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
        served_while_draining = 0
        if drain != "0":
            deadline = time.monotonic() + 10
            while status_of(f"{base}/api/v1/ready") != 503:  # each worker learns of it as the signal lands
                assert time.monotonic() < deadline, "readiness never turned 503"
                time.sleep(0.05)
            assert status_of(f"{base}/v2/health/ready") == 503
            assert status_of(f"{base}/api/v1/ready") == 503  # whichever worker answers
            assert status_of(url, data=quick, headers=headers) == 200  # still serving while draining
            served_while_draining = 1
        for worker in workers:
            worker.join(180)
        stop(server, log)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert statuses == [200, 200, 200, 200]
    assert count_predictions(env) == 4 + served_while_draining
