"""SIGTERM under load (REFERENCE §5): the production server (granian, the fast path in front
of Django) turns readiness 503, answers every request it had admitted with a 200, and writes
the history of every one of them before it exits."""

from __future__ import annotations

import http.client
import signal
import threading
import time

import orjson
import pytest

from tests import granian_server
from tests.inference.slow_models import make_sleepy_model
from tests.registry.onnx_factories import make_iris_model
from tests.v2 import live_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 4
SECOND_ROW = [[0.05, 0.05, 0.05, 0.05]]  # about a second of work for the sleepy model


def count_predictions(workdir) -> int:
    code = "from inference.models import Prediction; print(Prediction.objects.count())"
    done = granian_server.manage(live_server.server_environment(workdir), "shell", "--no-imports", "-c", code)
    return int(done.stdout.strip().splitlines()[-1])


def status_of(url: str) -> int:
    host_port, _, path = url.partition("/")
    connection = http.client.HTTPConnection(host_port, timeout=10)
    try:
        connection.request("GET", "/" + path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_sigterm_under_load_answers_every_admitted_request(tmp_path, monkeypatch):
    environment = live_server.server_environment
    # Serve on after the signal, readiness 503, as behind a load balancer. Long enough for both
    # probes below to be answered: each waits its turn behind the clients' one-second requests
    # on the four busy threads (with five seconds, the listener was sometimes closed before the
    # second probe was sent, and it was refused).
    monkeypatch.setattr(
        live_server, "server_environment", lambda workdir: {**environment(workdir), "SHUTDOWN_DRAIN_SECONDS": "20"}
    )
    # Two models: the template builder imports from one folder per validating process.
    models = {"sleepy": make_sleepy_model(), "iris": make_iris_model(zipmap=False)}
    keys = live_server.build_template(tmp_path / "template", models, lock=tmp_path / "template.lock")
    server = live_server.start(tmp_path / "template", tmp_path / "server", keys)
    host, port = server.url.split(":")
    # (sent before the SIGTERM?, status or the exception's name) for every request.
    outcomes: list[tuple[bool, int | str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    signalled = threading.Event()
    sent = threading.Semaphore(0)

    def client(index: int) -> None:
        body = orjson.dumps({"input_data": {"X": SECOND_ROW}, "skip_cache": True})
        headers = {"Authorization": f"Bearer {keys['predict']}", "Content-Type": "application/json"}
        while not stop.is_set():
            before_signal = False
            try:
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                connection.request("POST", "/api/v1/models/by-name/sleepy/predict", body, headers)
                before_signal = not signalled.is_set()
                sent.release()
                response = connection.getresponse()
                response.read()
                outcome: int | str = response.status
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes.append((before_signal, outcome))
            connection.close()
            if not isinstance(outcome, int):
                return  # the server is gone

    threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(CLIENTS * 2):  # two rounds of requests sent: the server is busy
            assert sent.acquire(timeout=60)
        signalled.set()
        server.process.send_signal(signal.SIGTERM)
        ready = [status_of(f"{server.url}/api/v1/ready")]
        while ready[-1] != 503 and len(ready) < 100:  # the worker learns of it as the signal lands
            time.sleep(0.05)
            ready.append(status_of(f"{server.url}/api/v1/ready"))
        assert ready[-1] == 503, ready
        assert status_of(f"{server.url}/v2/health/ready") == 503
        server.process.wait(timeout=60)
        stop.set()
        for thread in threads:
            thread.join(60)
    finally:
        stop.set()
        live_server.stop(server)

    assert server.process.returncode == 0, server.log_tail()
    admitted = [outcome for before_signal, outcome in outcomes if before_signal]
    assert len(admitted) >= CLIENTS * 2
    # Every request sent before the signal, in flight included, was answered, and well.
    assert set(admitted) == {200}, (outcomes, server.log_tail())
    # After the signal the server stops taking requests; nothing it answered was an error.
    late = [outcome for before_signal, outcome in outcomes if not before_signal]
    assert {outcome for outcome in late if isinstance(outcome, int)} <= {200}, late
    answered = sum(1 for _, outcome in outcomes if outcome == 200)
    assert count_predictions(tmp_path / "server") == answered  # nothing lost
