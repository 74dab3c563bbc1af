"""Soak: minutes of mixed traffic on the production server, with a Celery worker restarted in
the middle, counting every answer and watching the server processes' memory.

32 connections (keep-alive, one thread each) loop over a mix of requests to granian serving
the WSGI app (`make serve`): /api/v1 predict (half of them skipping the prediction cache, so
the model runs), /v2 infer (JSON) and, one request in ten, an inline job (POST /api/v1/jobs).
A `celery worker` subprocess runs the jobs; halfway through it gets SIGTERM (a warm shutdown:
its running job finishes) and a new worker is started. After the load, every job created is
waited for.

Counted: admitted requests (2xx), rejections (429, 503: the server shedding load, by design),
and errors (anything else, connection failures included); jobs completed vs not. Memory:
the resident set (RSS, psutil) of the granian processes (main and workers) once warm (after
the first tenth of the run) and at the end; the target is the end within 10% of the warm
figure. Exit status 1 if an admitted request failed, a job did not complete, or memory grew
past 10%.

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


@dataclass
class Tally:
    """Outcomes per kind of request: "predict", "v2", "job"."""

    statuses: dict[str, Counter] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)  # "kind: exception or status" -> count
    job_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, outcome: int | str, job_id: str | None = None) -> None:
        with self.lock:
            self.statuses.setdefault(kind, Counter())[outcome] += 1
            if not (isinstance(outcome, int) and (200 <= outcome < 300 or outcome in (429, 503))):
                self.failures[f"{kind}: {outcome}"] += 1
            if job_id:
                self.job_ids.append(job_id)

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


def load(port: int, key: str, tally: Tally, stop: threading.Event, index: int) -> None:
    """One connection's loop: predict, v2 infer and jobs in turn, until `stop`."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n = index
    while not stop.is_set():
        n += 1
        row = ROWS[n % len(ROWS)]
        if n % JOB_EVERY == 0:
            kind, path = "job", "/api/v1/jobs"
            body = orjson.dumps({"model_name": "iris", "input_data": {"X": [row]}})
        elif n % 2:
            kind, path = "predict", "/api/v1/models/by-name/iris/predict"
            body = orjson.dumps({"input_data": {"X": [row]}, "skip_cache": n % 4 == 1})
        else:
            kind, path = "v2", "/v2/models/iris/infer"
            body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]})
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            tally.record(kind, type(exc).__name__)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        job_id = orjson.loads(content)["id"] if kind == "job" and response.status == 202 else None
        tally.record(kind, response.status, job_id)
    connection.close()


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
            connection.request("GET", f"/api/v1/jobs/{job_id}/result?wait=30", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 202 or time.monotonic() > deadline:
                break
        connection.request("GET", f"/api/v1/jobs/{job_id}", headers=headers)
        job = orjson.loads(connection.getresponse().read())
        outcome[job["status"]] += 1
    connection.close()
    return outcome


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
    print(f"soak: {args.seconds}s, {args.connections} connections, granian {args.workers}x{args.threads}, {machine()}")
    with running(command, env=env, ready_url=f"http://127.0.0.1:{args.port}/api/v1/ready", log_name="soak") as server:
        threads = [
            threading.Thread(target=load, args=(args.port, key, tally, stop, index), daemon=True)
            for index in range(args.connections)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        warm_at, restart_at = started + args.seconds / 10, started + args.seconds / 2
        warm: dict[int, float] = {}
        restarted = False
        while (now := time.monotonic()) < started + args.seconds:
            if not warm and now >= warm_at:
                warm = server_rss_mb(server)
                print(f"  warm RSS {sum(warm.values()):.0f} MB over {len(warm)} processes at {now - started:.0f}s")
            if not restarted and now >= restart_at:
                print(f"  restarting the Celery worker at {now - started:.0f}s (SIGTERM, then a new one)")
                workers[-1].stop()
                workers.append(Worker(env, "soak-2", workdir / "worker-2.log"))
                restarted = True
            time.sleep(0.5)
        end = server_rss_mb(server)
        stop.set()
        for thread in threads:
            thread.join(90)
        elapsed = time.monotonic() - started
        jobs = wait_jobs(args.port, key, tally.job_ids)
    for worker in workers:
        worker.stop()

    admitted = tally.count(lambda outcome: isinstance(outcome, int) and 200 <= outcome < 300)
    rejected = tally.count(lambda outcome: outcome in (429, 503))
    errors = sum(tally.failures.values())
    warm_total, end_total = sum(warm.values()), sum(end.values())
    growth = (end_total - warm_total) / warm_total * 100 if warm_total else float("nan")
    print()
    print("| requests | admitted (2xx) | rejected (429/503) | errors | req/s |")
    print("|---|---|---|---|---|")
    print(f"| {admitted + rejected + errors:,} | {admitted:,} | {rejected:,} | {errors} | {admitted / elapsed:,.0f} |")
    for kind, counter in sorted(tally.statuses.items()):
        print(f"  {kind}: {dict(sorted(counter.items(), key=str))}")
    print(f"  jobs created {len(tally.job_ids):,}: {dict(jobs)}")
    print(f"  server RSS warm {warm_total:.0f} MB -> end {end_total:.0f} MB ({growth:+.1f}%), per process:")
    for pid in sorted(set(warm) | set(end)):
        print(f"    pid {pid}: {warm.get(pid, 0):.0f} MB -> {end.get(pid, 0):.0f} MB")
    if tally.failures:
        print(f"  failures: {dict(tally.failures)}")
    ok = errors == 0 and jobs.get("completed", 0) == len(tally.job_ids) and growth <= 10
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
