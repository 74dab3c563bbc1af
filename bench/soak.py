"""Soak: minutes of mixed traffic on the production server with processes killed under it,
counting every answer and watching the server processes' memory.

32 connections (keep-alive, one thread each) loop over a mix of requests to granian serving
the WSGI app as `make serve` does (workers respawned): /api/v1 predict (half of them skipping
the prediction cache, so the model runs), /v2 infer in JSON and in the binary extension (as
tritonclient sends it) and, one request in ten, an inline job (POST /api/v1/jobs). A `celery
worker` subprocess runs the jobs. Faults, at a fifth of the run each: a web worker SIGKILLed
(granian starts a new one), the Celery pool process SIGKILLed while a job runs (the pool starts
a new one; the job is redelivered), and a Celery worker warm-shut-down (SIGTERM: its running
job finishes) and replaced. After the load, every job created is waited for.

Counted: admitted requests (2xx), rejections (429, 503: the server shedding load, by design),
and errors (anything else, connection failures included); each error is listed with what
explains it: the seconds since the last fault, whether the connection had served requests
before (reused) and how long it sat idle, and the previous answer on it. A client does what a
careful HTTP client does (urllib3's rule): a request whose *reused* connection turns out to be
closed or reset before any answer is sent again once on a new one; those are counted apart
("resent"). Jobs completed vs not. Memory: the resident set (RSS, psutil) of the granian
processes (main and workers) once warm (after the first tenth of the run) and at the end; the
target is the end within 10% of the warm figure. Exit status 1 if an admitted request failed
outside a fault's window, a job did not complete, or memory grew past 10%.

    .venv/bin/python bench/soak.py [--seconds 300] [--connections 32] [--port 8600] [--workers 2]

Needs CELERY_BROKER_URL (Redis; a key prefix keeps the soak's queues apart) and uses REDIS_URL
for the cache when set; a fresh database next to DATABASE_URL (dropped at exit), else SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PYTHON, ROOT, machine, manage, running, serve_command, server_env  # noqa: E402

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
JOB_EVERY = 10  # one request in ten creates a job
# An error this close to a fault (seconds, either side) is the fault's: the requests in flight
# on a killed process, and those its replacement's start delays.
FAULT_WINDOW_SECONDS = 15.0
# What a connection closed by the server before answering looks like to http.client.
CLOSED = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)


@dataclass
class Failure:
    kind: str
    outcome: str  # the exception's name or the status
    at: float  # seconds since the start of the load
    reused: int  # requests this connection had answered before
    idle_ms: float  # since the previous answer on the connection
    previous: int | str | None  # that answer's status
    resent: bool = False  # sent again on a new connection, which answered


@dataclass
class Tally:
    """Outcomes per kind of request: "predict", "v2", "v2-binary", "job"."""

    statuses: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, outcome: int | str, job_id: str | None = None) -> None:
        with self.lock:
            self.statuses.setdefault(kind, Counter())[outcome] += 1
            if job_id:
                self.job_ids.append(job_id)

    def fail(self, failure: Failure) -> None:
        with self.lock:
            self.failures.append(failure)

    def count(self, test) -> int:
        return sum(n for counter in self.statuses.values() for outcome, n in counter.items() if test(outcome))


class Worker:
    """A `celery worker` subprocess (concurrency 1) in its own process group."""

    def __init__(self, env: dict, name: str, log: Path):
        self.name = name
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        command = [
            PYTHON, "-m", "celery", "-A", "modelforge_site", "worker", "-Q", "high,normal,low",
            "--concurrency", "1", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def pool_pids(self) -> list[int]:
        """The pool's child processes (where tasks run)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM: Celery's warm shutdown lets the running task finish."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()


def soak_env(workdir: Path) -> dict:
    if not os.environ.get("CELERY_BROKER_URL"):
        raise SystemExit("bench/soak.py runs jobs on a Celery worker: set CELERY_BROKER_URL (a Redis URL).")
    env = server_env(workdir)
    env.update(
        JOB_STORAGE_PATH=str(workdir / "jobs"),
        CELERY_BROKER_KEY_PREFIX=f"soak-{uuid.uuid4().hex[:8]}:",
        CACHE_KEY_PREFIX=f"soak-{uuid.uuid4().hex[:8]}",
        PYTHONUNBUFFERED="1",
    )
    return env


def binary_body(row: list[float]) -> tuple[bytes, dict[str, str]]:
    """A /v2 infer body in the binary extension, as tritonclient sends it: a JSON header, then
    the FP32 tensor's bytes; the output comes back as bytes too."""
    raw = struct.pack("<4f", *row)
    header = orjson.dumps(
        {
            "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
            "parameters": {"skip_cache": True},
        }
    )
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + raw, headers


def request_for(n: int) -> tuple[str, str, bytes, dict[str, str]]:
    """The n-th request of a connection: (kind, path, body, extra headers)."""
    row = ROWS[n % len(ROWS)]
    if n % JOB_EVERY == 0:
        return "job", "/api/v1/jobs", orjson.dumps({"model_name": "iris", "input_data": {"X": [row]}}), {}
    turn = n % 3
    if turn == 0:
        body = orjson.dumps({"input_data": {"X": [row]}, "skip_cache": n % 4 == 1})
        return "predict", "/api/v1/models/by-name/iris/predict", body, {}
    if turn == 1:
        body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]})
        return "v2", "/v2/models/iris/infer", body, {}
    body, headers = binary_body(row)
    return "v2-binary", "/v2/models/iris/infer", body, headers


class Connection:
    """One keep-alive connection and what is known of it: requests answered, when last."""

    def __init__(self, port: int):
        self.port = port
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.answered = 0
        self.last_answer = time.monotonic()
        self.last_status: int | str | None = None

    def renew(self) -> None:
        self.http.close()
        self.__init__(self.port)

    def send(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes]:
        self.http.request(method, path, body, headers)
        response = self.http.getresponse()
        content = response.read()
        self.answered += 1
        self.last_answer = time.monotonic()
        self.last_status = response.status
        return response.status, content


def load(port: int, key: str, tally: Tally, stop: threading.Event, index: int, started: float) -> None:
    """One connection's loop: predict, v2 infer (JSON and binary) and jobs in turn, until `stop`."""
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connection = Connection(port)
    n = index
    while not stop.is_set():
        n += 1
        kind, path, body, extra = request_for(n)
        headers = {**auth, **extra}
        reused, idle_ms = connection.answered, (time.monotonic() - connection.last_answer) * 1000
        previous = connection.last_status
        try:
            status, content = connection.send("POST", path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            failure = Failure(kind, type(exc).__name__, time.monotonic() - started, reused, idle_ms, previous)
            connection.renew()
            # The server closed a connection it had kept open, before answering: resend once on
            # a new one (what urllib3 does for a reused connection). Not for jobs: a POST that
            # creates something is not repeated blindly.
            if reused and kind != "job" and isinstance(exc, CLOSED):
                try:
                    status, content = connection.send("POST", path, body, headers)
                    failure.resent = True
                except (OSError, http.client.HTTPException):
                    connection.renew()
            tally.fail(failure)
            if not failure.resent:
                tally.record(kind, failure.outcome)
                continue
        job_id = orjson.loads(content)["id"] if kind == "job" and status == 202 else None
        tally.record(kind, status, job_id)
        if not (200 <= status < 300 or status in (429, 503)):
            tally.fail(Failure(kind, str(status), time.monotonic() - started, reused, idle_ms, previous))
    connection.http.close()


def server_rss_mb(server: subprocess.Popen) -> dict[int, float]:
    """{pid: resident MB} of the server's main process and its children (granian's workers)."""
    import psutil

    main = psutil.Process(server.pid)
    processes = [main, *main.children(recursive=True)]
    sizes = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes[process.pid] = process.memory_info().rss / 2**20
    return sizes


def wait_jobs(port: int, key: str, job_ids: list[str], timeout: float = 600.0) -> Counter:
    """Wait for every job to finish; {final status: count}."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {key}"}
    outcome: Counter = Counter()
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while True:
            connection.request("GET", f"/api/v1/jobs/{job_id}/result?wait=20", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 202 or time.monotonic() > deadline:
                break
        connection.request("GET", f"/api/v1/jobs/{job_id}", headers=headers)
        job = orjson.loads(connection.getresponse().read())
        outcome[job["status"]] += 1
    connection.close()
    return outcome


def running_job(port: int, key: str, timeout: float = 20.0) -> bool:
    """Wait (up to `timeout` s) until the API lists a running job; whether one was seen."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            connection.request("GET", "/api/v1/jobs?status=running", headers={"Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            content = response.read()
            if response.status == 200 and orjson.loads(content).get("count"):
                return True
    finally:
        connection.close()
    return False


def kill_web_worker(server: subprocess.Popen) -> int:
    """SIGKILL one granian worker (a child of the main process); its pid."""
    import psutil

    victim = min(child.pid for child in psutil.Process(server.pid).children())
    os.kill(victim, signal.SIGKILL)
    return victim


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes")
    parser.add_argument("--threads", type=int, default=4, help="granian blocking threads per worker")
    args = parser.parse_args()

    import tempfile

    from registry.demo import build_iris_onnx

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-soak-"))
    env = soak_env(workdir)
    manage(env, "migrate", "--noinput", "-v0")
    source = workdir / "source"
    source.mkdir()
    (source / "iris-1.0.0.onnx").write_bytes(build_iris_onnx())
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "soak", "--scopes", "read,predict").strip()

    tally = Tally()
    stop = threading.Event()
    workers = [Worker(env, "soak-1", workdir / "worker-1.log")]
    command = serve_command(args.port, args.workers, args.threads)
    faults: list[tuple[float, str]] = []
    print(f"soak: {args.seconds}s, {args.connections} connections, granian {args.workers}x{args.threads}, {machine()}")
    with running(command, env=env, ready_url=f"http://127.0.0.1:{args.port}/api/v1/ready", log_name="soak") as server:
        started = time.monotonic()
        threads = [
            threading.Thread(target=load, args=(args.port, key, tally, stop, index, started), daemon=True)
            for index in range(args.connections)
        ]
        for thread in threads:
            thread.start()
        warm_at = started + args.seconds / 10
        plan = [(started + args.seconds * fifth / 5, name) for fifth, name in ((1, "web"), (2, "celery"), (3, "warm"))]
        warm: dict[int, float] = {}
        while (now := time.monotonic()) < started + args.seconds:
            if not warm and now >= warm_at:
                warm = server_rss_mb(server)
                print(f"  warm RSS {sum(warm.values()):.0f} MB over {len(warm)} processes at {now - started:.0f}s")
            if plan and now >= plan[0][0]:
                _, fault = plan.pop(0)
                if fault == "web":
                    victim = kill_web_worker(server)
                    print(f"  {now - started:.0f}s: SIGKILL web worker {victim}")
                elif fault == "celery":
                    mid_job = running_job(args.port, key)
                    pool = workers[-1].pool_pids()
                    for pid in pool:
                        os.kill(pid, signal.SIGKILL)
                    print(f"  {time.monotonic() - started:.0f}s: SIGKILL Celery pool {pool} (a job running: {mid_job})")
                else:
                    print(f"  {now - started:.0f}s: warm shutdown of the Celery worker (SIGTERM), a new one")
                    workers[-1].stop()
                    workers.append(Worker(env, f"soak-{len(workers) + 1}", workdir / f"worker-{len(workers) + 1}.log"))
                faults.append((time.monotonic() - started, fault))
            time.sleep(0.5)
        end = server_rss_mb(server)
        stop.set()
        for thread in threads:
            thread.join(90)
        elapsed = time.monotonic() - started
        jobs = wait_jobs(args.port, key, tally.job_ids)
        alive = server.poll() is None
    for worker in workers:
        worker.stop()

    def near_fault(failure: Failure) -> str | None:
        for at, fault in faults:
            if -1 <= failure.at - at <= FAULT_WINDOW_SECONDS:
                return fault
        return None

    admitted = tally.count(lambda outcome: isinstance(outcome, int) and 200 <= outcome < 300)
    rejected = tally.count(lambda outcome: outcome in (429, 503))
    lost = [failure for failure in tally.failures if not failure.resent]
    resent = [failure for failure in tally.failures if failure.resent]
    unexplained = [failure for failure in lost if near_fault(failure) is None]
    warm_total, end_total = sum(warm.values()), sum(end.values())
    growth = (end_total - warm_total) / warm_total * 100 if warm_total else float("nan")
    print()
    print("| requests | admitted (2xx) | rejected (429/503) | errors | of which at a fault | resent | req/s |")
    print("|---|---|---|---|---|---|---|")
    total = admitted + rejected + len(lost)
    print(
        f"| {total:,} | {admitted:,} | {rejected:,} | {len(lost)} | {len(lost) - len(unexplained)} | {len(resent)} "
        f"| {admitted / elapsed:,.0f} |"
    )
    for kind, counter in sorted(tally.statuses.items()):
        print(f"  {kind}: {dict(sorted(counter.items(), key=str))}")
    print(f"  faults: {', '.join(f'{fault} at {at:.0f}s' for at, fault in faults)}; server up at the end: {alive}")
    print(f"  jobs created {len(tally.job_ids):,}: {dict(jobs)}")
    print(f"  server RSS warm {warm_total:.0f} MB -> end {end_total:.0f} MB ({growth:+.1f}%), per process:")
    for pid in sorted(set(warm) | set(end)):
        print(f"    pid {pid}: {warm.get(pid, 0):.0f} MB -> {end.get(pid, 0):.0f} MB")
    for failure in tally.failures:
        print(
            f"  {'resent' if failure.resent else 'error'}: {failure.kind} {failure.outcome} at {failure.at:.1f}s "
            f"(fault: {near_fault(failure)}), connection reused {failure.reused}x, idle {failure.idle_ms:.1f} ms, "
            f"previous answer {failure.previous}"
        )
    ok = alive and not unexplained and jobs.get("completed", 0) == len(tally.job_ids) and growth <= 10
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
