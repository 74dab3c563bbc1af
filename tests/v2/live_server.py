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
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests import granian_server

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
        return granian_server.log_tail(self.log, lines)


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
    granian_server.manage(environment, "migrate", "--noinput", "-v0")

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
            pool.map(
                lambda source: granian_server.manage(environment, "import_models", str(source), check=False), sources
            )
        )
    failed = [result for result in results if result.returncode != 0]
    if failed:
        raise RuntimeError("import_models failed:\n" + "\n".join(result.stdout + result.stderr for result in failed))

    keys = {
        scope: granian_server.manage(
            environment, "create_api_key", "--name", f"v2-{scope}", "--scopes", scope
        ).stdout.strip()
        for scope in ("predict", "read", "manage")
    }
    for source in sources:
        shutil.rmtree(source)
    (template / "keys.json").write_text(json.dumps(keys))


def start(template: Path, workdir: Path, keys: dict[str, str]) -> LiveServer:
    """Copy the template into `workdir` and start granian on a free port; wait until ready."""
    shutil.copytree(template, workdir, dirs_exist_ok=True)
    port = granian_server.free_port()
    log = workdir / "server.log"
    process = granian_server.start(
        server_environment(workdir), log, port=port, ready_path="/v2/health/ready", timeout=START_TIMEOUT_SECONDS
    )
    return LiveServer(url=f"127.0.0.1:{port}", keys=keys, process=process, log=log)


def stop(server: LiveServer) -> None:
    """SIGTERM the server we started (granian stops its workers), SIGKILL its group if it hangs."""
    granian_server.stop(server.process, timeout=15)
