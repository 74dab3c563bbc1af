"""Shared pieces of the benchmarks: start servers, wait for them, drive them with wrk."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback only)
                if response.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def running(
    command: list[str],
    *,
    env: dict,
    log_name: str,
    ready_url: str | None = None,
    ready: Callable[[], None] | None = None,
    cwd: Path = ROOT,
):
    """Run `command` until the block ends; ready once `ready_url` answers (or `ready()` returns)."""
    log = open(Path(tempfile.gettempdir()) / f"bench-{log_name}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(ready_url) if ready is None else ready()
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@dataclass
class LoadResult:
    label: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int

    def row(self) -> str:
        rps, p50, p99 = self.requests_per_second, self.p50_ms, self.p99_ms
        return f"| {self.label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {self.errors} |"


_LUA = """
local file = io.open({path}, "rb")
wrk.body = file:read("*all")
file:close()
wrk.method = "POST"
{headers}
"""


def _duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    label: str, url: str, body: bytes, *, connections: int, seconds: int, headers: dict | None = None, threads: int = 2
) -> LoadResult:
    """Drive a POST endpoint with wrk (Debian's package) and read req/s and latency percentiles."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    headers = {"Content-Type": "application/json", **(headers or {})}
    header_lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items() if v)
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as body_file:
        body_file.write(body)  # may be binary (v2 tensors): wrk reads it from the file
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA.format(path=json.dumps(body_file.name), headers=header_lines))
    try:
        completed = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
        os.unlink(body_file.name)
    out = completed.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _duration_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _duration_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in match.groups())
    return LoadResult(label, rps, p50, p99, errors)


def machine() -> str:
    import platform

    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def server_env(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DEBUG="false",
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="0",
        MODEL_STORAGE_PATH=str(workdir / "models"),
        LOG_LEVEL="WARNING",
    )
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL"), workdir)
    env.setdefault("CACHE_KEY_PREFIX", f"bench-{os.getpid()}")
    return env


def fresh_database(url: str | None, workdir: Path, label: str = "bench") -> str:
    """An empty database for this run: a new PostgreSQL database next to the one in `url`
    (dropped at exit), or a SQLite file in the work folder. `label` keeps several apart."""
    if not url or not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{workdir / 'bench.sqlite3'}"
    import atexit
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"modelforge_{label}_{os.getpid()}"
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    atexit.register(drop)
    return urlunsplit(parts._replace(path=f"/{name}"))


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def serve_command(port: int, workers: int, threads: int) -> list[str]:
    """The production server command, as `make serve` runs it."""
    return [
        PYTHON, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--blocking-threads", str(threads), "--respawn-failed-workers", "--no-access-log",
        "modelforge_site.wsgi:application",
    ]  # fmt: skip
