"""A real ModelForge server process for the end-to-end /v2 tests.

The server runs as in production (granian serving `modelforge_site.wsgi:application`, the fast
path in front of Django, DEBUG off) on a free port, against its own SQLite file and model store:
pytest-django's test database lives inside the test process and another process cannot see it.

Registering ~80 models takes a while (each is validated in a sandboxed child process), so the
database and store are built once per test run, under a file lock shared by the pytest-xdist
workers, and each worker copies them and starts its own server.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
START_TIMEOUT_SECONDS = 60
# Above the 10 MB default: the largest backend test model's input is ~19 MB as JSON numbers.
MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass
class LiveServer:
    url: str  # host:port, as tritonclient wants it
    keys: dict[str, str]  # "predict", "read", "manage" -> raw key
    process: subprocess.Popen
    log: Path

    @property
    def base(self) -> str:
        return f"http://{self.url}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def server_environment(workdir: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "v2-live-server-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "MODEL_STORAGE_PATH": str(workdir / "store"),
        "STATIC_ROOT": str(workdir / "static"),
        "JOB_STORAGE_PATH": str(workdir / "jobs"),
        # In-process cache and jobs: the server shares nothing with the test run.
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "LOG_LEVEL": "WARNING",
        "MAX_REQUEST_BODY_BYTES": str(MAX_BODY_BYTES),
        "HISTORY_FLUSH_INTERVAL_SECONDS": "0.2",
    }
    return environment


def build_template(template: Path, models: dict[str, bytes | Path], *, lock: Path) -> dict[str, str]:
    """Migrate a database and register `models` ({name: bytes or path}, version 1.0.0) into
    `template` once; later callers (other workers) wait for it and read the keys."""
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        done = template / "keys.json"
        if not done.exists():
            _build(template, models)
        return json.loads(done.read_text())


def _build(template: Path, models: dict[str, bytes | Path]) -> None:
    if template.exists():
        shutil.rmtree(template)
    template.mkdir(parents=True)
    environment = server_environment(template)
    _manage(environment, "migrate", "--noinput", "-v0")

    # Two or more folders imported side by side: validation runs in a child process per model.
    workers = max(2, min(4, os.cpu_count() or 2))
    sources = [template / f"source-{index}" for index in range(workers)]
    for index, (name, model) in enumerate(sorted(models.items())):
        folder = sources[index % workers] / name / "1.0.0"
        folder.mkdir(parents=True)
        if isinstance(model, Path):
            shutil.copyfile(model, folder / "model.onnx")
        else:
            (folder / "model.onnx").write_bytes(model)
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            pool.map(lambda source: _manage(environment, "import_models", str(source), check=False), sources)
        )
    failed = [result for result in results if result.returncode != 0]
    if failed:
        raise RuntimeError("import_models failed:\n" + "\n".join(result.stdout + result.stderr for result in failed))

    keys = {
        scope: _manage(environment, "create_api_key", "--name", f"v2-{scope}", "--scopes", scope).stdout.strip()
        for scope in ("predict", "read", "manage")
    }
    for source in sources:
        shutil.rmtree(source)
    (template / "keys.json").write_text(json.dumps(keys))


def _manage(environment: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=check,
        timeout=600,
    )


def start(template: Path, workdir: Path, keys: dict[str, str]) -> LiveServer:
    """Copy the template into `workdir` and start granian on a free port; wait until ready."""
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    port = _free_port()
    log = workdir / "server.log"
    granian = Path(sys.executable).with_name("granian")
    command = [
        str(granian),
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--blocking-threads",
        "4",
        "--no-access-log",
        "modelforge_site.wsgi:application",
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=server_environment(workdir),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(url=f"127.0.0.1:{port}", keys=keys, process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        if _answers(f"{server.base}/v2/health/ready"):
            return server
        time.sleep(0.2)
    stop(server)
    raise RuntimeError(f"the server did not become ready in {START_TIMEOUT_SECONDS}s:\n{server.log_tail()}")


def stop(server: LiveServer) -> None:
    """SIGTERM the server we started (granian stops its workers), SIGKILL its group if it hangs."""
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own loopback server)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
