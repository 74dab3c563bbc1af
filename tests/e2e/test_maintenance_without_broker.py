"""Without a broker (the `make run` default), the periodic work (drift, the threshold watch, the
webhook sweeper...) runs on the embedded runner's maintenance thread: it starts with the server,
not with the first job. The server here is the real one, started as `make run` starts it
(`manage.py runserver`, SQLite, no Redis, no broker) and as `make serve` does (granian); the
test only predicts (no job, no validation), and sees the drift run build the version's
reference from its first recorded predictions and judge its windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from registry.demo import build_iris_onnx
from tests import granian_server

pytestmark = pytest.mark.e2e

REFERENCE_PREDICTIONS = 5


def prepared(tmp_path: Path) -> tuple[dict, str]:
    """The environment of `make run` (its own SQLite file and model store, no Redis or broker)
    with the maintenance thread, the drift run and the threshold watch every second, iris
    imported and a key that may predict and read: (environment, raw key)."""
    env = {
        **os.environ,
        "DEBUG": "true",
        "SECRET_KEY": "maintenance-test-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "CELERY_BROKER_URL": "",
        "REDIS_URL": "",
        "HISTORY_FLUSH_INTERVAL_SECONDS": "0.2",
        "JOB_SWEEP_INTERVAL_SECONDS": "1",
        "DRIFT_INTERVAL_SECONDS": "1",
        "MONITOR_THRESHOLD_INTERVAL_SECONDS": "1",
        "DRIFT_REFERENCE_PREDICTIONS": str(REFERENCE_PREDICTIONS),
    }
    source = tmp_path / "source"
    source.mkdir()
    (source / "iris-1.0.0.onnx").write_bytes(build_iris_onnx())
    granian_server.manage(env, "migrate", "--noinput")
    granian_server.manage(env, "import_models", str(source))
    key = granian_server.manage(env, "create_api_key", "--name", "e2e", "--scopes", "predict,read").stdout.strip()
    return env, key


def start_runserver(env: dict, log: Path, port: int) -> subprocess.Popen:
    """`manage.py runserver` as `make run` runs it (with the autoreloader: the served process is
    its child), in its own process group; returns once /api/v1/live answers."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
            cwd=granian_server.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while not granian_server.answers(f"http://127.0.0.1:{port}/api/v1/live"):
        if process.poll() is not None or time.monotonic() > deadline:
            granian_server.stop(process)
            raise RuntimeError(f"runserver did not start ({log}):\n{granian_server.log_tail(log)}")
        time.sleep(0.2)
    return process


def call(url: str, key: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        url, data=data, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.parametrize("server", ["runserver", "granian"])
def test_the_drift_run_happens_without_a_broker_and_without_any_job(tmp_path, server):
    env, key = prepared(tmp_path)
    port = granian_server.free_port()
    log = tmp_path / "server.log"
    if server == "runserver":
        process = start_runserver(env, log, port)
    else:
        process = granian_server.start(env, log, port=port, workers=1, ready_path="/api/v1/live", timeout=90)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        status, listing = call(f"{base}/models?name=iris", key)
        assert status == 200, listing
        model_id = listing["results"][0]["id"]
        for _ in range(REFERENCE_PREDICTIONS):
            status, answer = call(
                f"{base}/models/{model_id}/predict",
                key,
                {"input_data": {"X": [[5.1, 3.5, 1.4, 0.2]]}, "skip_cache": True},
            )
            assert status == 200, answer

        # The periodic drift run builds the reference from those predictions, then judges the
        # version's windows: wait for both (each run is a second apart).
        deadline = time.monotonic() + 120
        while True:
            reference_status, reference = call(f"{base}/models/{model_id}/reference", key)
            drift_status, drift = call(f"{base}/models/{model_id}/drift", key)
            if reference_status == 200 and drift_status == 200 and drift.get("windows"):
                break
            assert process.poll() is None, granian_server.log_tail(log)
            assert time.monotonic() < deadline, (reference, drift, granian_server.log_tail(log))
            time.sleep(0.5)
        assert reference["source"] == "predictions" and reference["rows"] == REFERENCE_PREDICTIONS
        assert {window["window"] for window in drift["windows"]} == {"1h", "1d"}
        assert all(window["predictions"] == REFERENCE_PREDICTIONS for window in drift["windows"])

        status, jobs = call(f"{base}/jobs", key)
        assert status == 200 and jobs["count"] == 0  # nothing but the server's start started it
    finally:
        granian_server.stop(process, timeout=30)
