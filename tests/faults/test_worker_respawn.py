"""A web worker process killed (SIGKILL: what an out-of-memory kill or a crash inside a native
library looks like from outside) is replaced by a new one while the others serve on.

The production server (granian as `make serve` starts it, tests/granian_server.py) with two
workers: each worker in turn is SIGKILLed while requests are in flight. Only requests the dead
worker was answering may fail (a connection error, never an HTTP error); everything sent after
it is gone is answered by the other; granian's main process stays up, starts a new worker, and
the server answers on with two workers, the replacement among them (the second kill leaves it
alone in front). A stop afterwards is still a clean one.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import psutil
import pytest

from tests import granian_server
from tests.inference.slow_models import make_sleepy_model
from tests.registry.onnx_factories import make_iris_model
from tests.v2 import live_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
# Safety nets only: every wait below ends on a state (a pid gone, a worker started).
RESPAWN_TIMEOUT_SECONDS = 120
CONSECUTIVE = 20  # answers in a row that show the server serves again
IN_FLIGHT = 4
SLOW_ROW = [[0.05, 0.05, 0.05, 0.05]]  # about a second of work for the sleepy model
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


class Server:
    def __init__(self, tmp_path: Path):
        models = {"sleepy": make_sleepy_model(), "iris": make_iris_model(zipmap=False)}
        self.keys = live_server.build_template(tmp_path / "template", models, lock=tmp_path / "template.lock")
        workdir = tmp_path / "server"
        shutil.copytree(tmp_path / "template", workdir)
        self.port = granian_server.free_port()
        self.log = workdir / "server.log"
        self.process = granian_server.start(
            live_server.server_environment(workdir),
            self.log,
            port=self.port,
            workers=WORKERS,
            ready_path="/api/v1/ready",
            timeout=live_server.START_TIMEOUT_SECONDS,
        )

    def started_workers(self) -> int:
        """How many worker processes granian has started so far (its log says so per worker)."""
        return self.log.read_text(errors="replace").count("] Started worker-")

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + RESPAWN_TIMEOUT_SECONDS
        while not condition():
            assert self.process.poll() is None, f"granian exited while waiting for {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {RESPAWN_TIMEOUT_SECONDS}s:\n{self.tail()}"
            time.sleep(0.05)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 60) -> int | str:
        """One request on a new connection: its status, or the name of the connection error."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.keys['predict']}", "Content-Type": "application/json"}
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        finally:
            connection.close()

    def live(self) -> int | str:
        return self.request("GET", "/api/v1/live")

    def predict(self, model: str = "iris", rows=IRIS_ROW) -> int | str:
        body = orjson.dumps({"input_data": {"X": rows}, "skip_cache": True})
        return self.request("POST", f"/api/v1/models/by-name/{model}/predict", body)

    def tail(self) -> str:
        return granian_server.log_tail(self.log)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    try:
        yield server
    finally:
        granian_server.stop(server.process)


def test_a_killed_web_worker_is_replaced_while_the_other_serves(server):
    server.wait_for(lambda: server.started_workers() == WORKERS, "second worker")
    first = granian_server.worker_pids(server.process)
    assert len(first) == WORKERS

    # Each worker in turn: in the second round the replacement of the first is the other one.
    for victim in sorted(first):
        kill_under_requests(server, victim)

    assert granian_server.stop(server.process) == 0, server.tail()


def kill_under_requests(server: Server, victim: int) -> None:
    workers = granian_server.worker_pids(server.process)
    assert victim in workers

    # Requests in flight (about a second of work each) when the victim dies.
    outcomes: list[int | str] = []
    sent = threading.Semaphore(0)

    def slow_request() -> None:
        sent.release()
        outcomes.append(server.predict("sleepy", SLOW_ROW))

    clients = [threading.Thread(target=slow_request) for _ in range(IN_FLIGHT)]
    for client in clients:
        client.start()
    for _ in clients:
        assert sent.acquire(timeout=60)
    time.sleep(0.2)  # let the requests reach the server; the assertions hold either way
    started_before = server.started_workers()
    os.kill(victim, signal.SIGKILL)
    # Reaped by granian, so gone with all its threads: a multi-threaded process shows as a
    # zombie while its other threads still exit and its listening socket (SO_REUSEPORT, one per
    # worker) still holds connections, which are reset when it closes.
    server.wait_for(lambda: not psutil.pid_exists(victim), "end of the killed worker")

    # The worker left serves everything sent from now on, while the replacement starts.
    meanwhile = [server.live() if index % 2 else server.predict() for index in range(10)]
    assert meanwhile == [200] * 10, server.tail()

    server.wait_for(lambda: server.started_workers() > started_before, "replacement worker")
    replaced = granian_server.worker_pids(server.process)
    assert len(replaced) == WORKERS and victim not in replaced
    assert workers - {victim} <= replaced  # the other one was never touched

    answers = [server.live() if index % 2 else server.predict() for index in range(CONSECUTIVE)]
    assert answers == [200] * CONSECUTIVE, server.tail()
    assert server.process.poll() is None  # granian's main process never stopped

    for client in clients:
        client.join(RESPAWN_TIMEOUT_SECONDS)
    # The requests of the dead worker lost their connection; none got an HTTP error.
    assert len(outcomes) == IN_FLIGHT
    assert all(outcome == 200 or isinstance(outcome, str) for outcome in outcomes), outcomes


POOL_SESSIONS_AFTER = """
import django; django.setup()
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from inference import metrics
metrics.POOL_SESSIONS.set({sessions})
{then}
"""


def test_the_live_gauges_of_a_killed_worker_leave_metrics_with_it(tmp_path):
    """/metrics sums the session-pool gauges over the server's live processes. A worker that is
    SIGKILLed runs no finalizer; the process that starts in its place forgets it."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
    }

    def run(sessions: int, then: str) -> subprocess.CompletedProcess:
        code = POOL_SESSIONS_AFTER.format(sessions=sessions, then=then)
        command = [sys.executable, "-c", code]
        folder = granian_server.BASE_DIR
        return subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True, timeout=120)

    killed = run(3, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(tmp_path.glob(f"gauge_live*_{killed_pid(tmp_path)}.db"))  # left behind

    replacement = run(
        1,
        "registry = CollectorRegistry(); MultiProcessCollector(registry)\n"
        "print(registry.get_sample_value('modelforge_session_pool_sessions'))",
    )
    assert replacement.returncode == 0, replacement.stderr
    assert replacement.stdout.strip().splitlines()[-1] == "1.0"  # not 4.0: the dead one's 3 are gone


def killed_pid(folder: Path) -> str:
    (path,) = folder.glob("gauge_live*_*.db")
    return path.stem.rpartition("_")[2]
