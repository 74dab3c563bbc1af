"""Fixtures for the job tests.

Most tests run jobs with the embedded runner (no broker), exactly as `make run` does. The
tests in test_celery_worker.py run them on real Celery workers: subprocesses started with
`celery -A modelforge_site worker`, against the Redis broker in CELERY_BROKER_URL and the test
database itself (through DATABASE_URL; the tests are transactional, so what they write is
committed and visible to the worker). A subprocess, not an in-process test worker, because the
tests kill workers with SIGKILL. Each pytest process gets its own key prefix in the broker's
Redis database (the transport's `global_keyprefix`), so parallel test runs never consume each
other's messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from registry.models import MLModel
from tests.registry.versions import ready_version

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
NO_BROKER = "needs a Redis broker: set CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/1), as CI does"


@pytest.fixture(autouse=True)
def _jobs(settings, tmp_path):
    """Job files in the test's folder; the embedded runner unless a test asks for a Celery
    worker; no periodic sweeper thread (tests sweep when they mean to). The runner is drained
    and stopped after each test, so the next one starts it with its own settings."""
    from core.embedded_runner import runner

    settings.JOB_STORAGE_PATH = tmp_path / "jobs"
    settings.CELERY_BROKER_URL = ""
    settings.JOB_SWEEP_INTERVAL_SECONDS = 0
    yield
    runner.wait_idle(timeout=30)
    runner.stop()


@pytest.fixture
def make_model(db):
    """make_model(onnx_bytes, name=..., version=...) -> a ready MLModel, built as
    tests/registry/versions.py builds one (the registry's services, the inspector's report
    computed once per model in this process instead of in a sandboxed child per test)."""

    def _make(data: bytes, *, name: str = "iris", version: str = "1.0.0") -> MLModel:
        return ready_version(data, name=name, version=version)

    return _make


@pytest.fixture
def jobs_client(client_for):
    """A key with the predict scope (all job routes need it)."""
    return client_for("predict", name="jobs-a")


@pytest.fixture
def other_client(client_for):
    return client_for("predict", name="jobs-b")


# --- real Celery workers ----------------------------------------------------------------------


def database_url() -> str:
    """The test database (pytest-django's test_<name>, created by now) as a DATABASE_URL."""
    from django.db import connection

    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    credentials = quote(config.get("USER") or "")
    if config.get("PASSWORD"):
        credentials += ":" + quote(config["PASSWORD"])
    host = config.get("HOST") or "127.0.0.1"
    port = config.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(config['NAME'])}"


class CeleryWorker:
    """A `celery worker` subprocess in its own process group (so it can be killed whole).
    Without heartbeats unless asked: only the tests of `modelforge_workers` read them."""

    def __init__(self, name: str, env: dict, log_path: Path, *, heartbeat: bool = False):
        self.name = f"{name}@{socket.gethostname()}"
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "modelforge_site",
            "worker",
            "-Q",
            "high,normal,low",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--hostname",
            self.name,
            "--without-gossip",
            "--without-mingle",
            *(() if heartbeat else ("--without-heartbeat",)),
            "--loglevel",
            "INFO",
        ]
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log()}")
            if f"{self.name} ready." in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_pids(self) -> list[int]:
        """The pool's child processes (where tasks run)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def kill(self) -> None:
        """SIGKILL the whole worker, main process and pool: what a machine crash looks like."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class CeleryStack:
    """A broker namespace (key prefix) and the folders that the test process and its workers
    share: the API (here) stores model and input files where the workers read them."""

    def __init__(self, root: Path):
        self.prefix = f"mftest-{uuid.uuid4().hex[:10]}:"
        self.root = root
        self.models = root / "models"
        self.jobs = root / "jobs"
        (self.models / "tmp").mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.workers: list[CeleryWorker] = []

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url(),
            CELERY_BROKER_URL=BROKER_URL,
            CELERY_BROKER_KEY_PREFIX=self.prefix,
            MODEL_STORAGE_PATH=str(self.models),
            JOB_STORAGE_PATH=str(self.jobs),
            JOB_CHUNK_ROWS="100",
            JOB_RETRY_BACKOFF_SECONDS="0.2",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start_worker(self, name: str, *, heartbeat: bool = False, **env: str) -> CeleryWorker:
        worker = CeleryWorker(name, self.env(**env), self.root / f"{name}.log", heartbeat=heartbeat)
        self.workers.append(worker)
        return worker

    def configure(self, settings) -> None:
        """Point this (the API's) process at the stack: broker namespace and shared folders."""
        settings.CELERY_BROKER_URL = BROKER_URL
        settings.MODEL_STORAGE_PATH = self.models
        settings.FILE_UPLOAD_TEMP_DIR = str(self.models / "tmp")
        settings.JOB_STORAGE_PATH = self.jobs
        point_celery_at(BROKER_URL, self.prefix, settings)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        # Leave the shared Redis database as it was: drop this namespace's queues and bindings.
        import redis

        client = redis.Redis.from_url(BROKER_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def point_celery_at(url: str, prefix: str, settings) -> None:
    """Reconfigure this process's Celery app (its producer pool holds connections: close it).

    Celery prefers the CELERY_BROKER_URL environment variable to its configured broker_url, but
    not to broker_read_url / broker_write_url, which every connection is made from.
    """
    from core.celery_app import app

    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": prefix}
    app.conf.update(broker_read_url=url, broker_write_url=url, broker_transport_options=options)
    app.close()  # drops the connection pool, but not the producer pool made from it:
    app.amqp._producer_pool = None


@pytest.fixture(scope="session")
def celery_stack(django_db_setup, tmp_path_factory):
    """The workers' namespace and folders, plus one shared worker (concurrency 1), for the
    whole test session. Tests that kill workers start their own in another namespace."""
    if not BROKER_URL:
        pytest.skip(NO_BROKER)
    stack = CeleryStack(tmp_path_factory.mktemp("celery"))
    stack.shared = stack.start_worker(f"shared-{os.getpid()}")
    yield stack
    stack.stop()


@pytest.fixture
def celery_worker(celery_stack, settings):
    """The shared worker, with this process pointed at it; idle again after the test."""
    from django.conf import settings as live_settings

    from jobs import services
    from jobs.models import Job

    celery_stack.configure(settings)
    yield celery_stack.shared
    for job in Job.objects.active():
        with contextlib.suppress(Exception):
            services.job_cancel(job=job)
    _wait_worker_idle(celery_stack.shared)
    point_celery_at(BROKER_URL, "", live_settings)


def _wait_worker_idle(worker: CeleryWorker, timeout: float = 30.0) -> None:
    from core.celery_app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inspector = app.control.inspect(destination=[worker.name], timeout=1)
        active = (inspector.active() or {}).get(worker.name)
        if active == []:
            return
        time.sleep(0.2)
