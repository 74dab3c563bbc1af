"""A real ModelForge server process for the end-to-end tests: granian serving
`modelforge_site.wsgi:application` on loopback, as `make serve` does in production.

The tests build the server's environment (database, model store, settings) themselves and
prepare its database with `manage`; this module starts the process, waits until it answers and
stops it. The server runs in its own session (process group), so that a stop can kill its
workers too when granian does not end them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)


def free_port(within: range | None = None) -> int:
    """A loopback port nothing is bound to now: one the kernel picks, or the first free one of
    `within`. Another process may still take it before the server binds it."""
    for port in (0,) if within is None else within:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError(f"no free port in {within}")


def granian_command(port: int, *, workers: int = 1, threads: int | None = 4) -> list[str]:
    """The granian command line serving the WSGI application on 127.0.0.1:`port` with `workers`
    processes of `threads` blocking threads each (None: granian's own default, for WSGI half
    its backpressure: hundreds), with the options production uses (`make serve`): a worker that
    dies is replaced (--respawn-failed-workers)."""
    command = [
        str(Path(sys.executable).with_name("granian")),
        "--interface", "wsgi",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    if threads is not None:
        command += ["--blocking-threads", str(threads)]
    return [*command, "--respawn-failed-workers", "--no-access-log", "modelforge_site.wsgi:application"]


def start(
    env: dict[str, str],
    log: Path,
    *,
    port: int,
    workers: int = 1,
    threads: int | None = 4,
    ready_path: str,
    timeout: float = 60,
) -> subprocess.Popen:
    """Start granian (see `granian_command`) with `env`, its output in `log`, and return once
    `ready_path` on it answers 200. Raises RuntimeError with the log's tail if the server exits
    first, or if it is not ready within `timeout` seconds (it is stopped then)."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            granian_command(port, workers=workers, threads=threads),
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} ({log}):\n{log_tail(log)}")
        if answers(f"http://127.0.0.1:{port}{ready_path}"):
            return process
        time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"the server was not ready in {timeout}s ({log}):\n{log_tail(log)}")


def stop(process: subprocess.Popen, *, timeout: float = 15) -> int:
    """SIGTERM the server's main process (granian stops its workers gracefully: requests in
    progress finish, buffered history is written); SIGKILL its whole group if it has not exited
    within `timeout` seconds. Returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode


def worker_pids(process: subprocess.Popen) -> set[int]:
    """The pids of the server's worker processes now: the live children of granian's main
    process (a worker killed but not yet reaped by it is left out)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children()
    except psutil.NoSuchProcess:
        return set()
    alive = set()
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def answers(url: str) -> bool:
    """Whether a GET of `url` answers 200 (False for any other status or no connection)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own loopback server)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def manage(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python manage.py *args` in the project, with `env` (the server's settings), its output
    captured as text. With `check`, a failure raises RuntimeError carrying that output."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done
