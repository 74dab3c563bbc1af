"""Benchmark: batch jobs on a real Celery worker vs raw onnxruntime over the same rows.

For the iris classifier and a wide MLP (256 inputs, three hidden layers of 1024, built here
with scikit-learn's MLPRegressor and skl2onnx), it runs a batch job of N rows (100,000 by
default) on a `celery worker` subprocess and the same rows through onnxruntime in one plain
Python process (numpy, orjson and onnxruntime only), and prints rows/s and their ratio (target
>= 0.7x). The baseline does what the job does, minus ModelForge: read the same file, run the
same chunks with the same session options (one intra-op thread, as the worker has by default),
write the same JSON Lines output. A compute-only figure (arrays already in memory, no output)
is shown too.

The machine may be shared: rows per CPU second of the worker's pool process (from
/proc/PID/stat) against rows per CPU second of the baseline process are shown too, a ratio that
other load on the machine moves much less than wall-clock rates.

Memory: each job runs on a fresh worker (concurrency 1); the pool process's peak RSS (VmHWM)
after a 10,000-row and an N-row job shows whether memory grows with the row count (target:
flat).

    .venv/bin/python bench/jobs.py [--rows 100000] [--models iris,mlp] [--repeats 3]

Needs CELERY_BROKER_URL (Redis); a key prefix keeps the bench's queues apart from anything else
on that Redis. Uses a fresh database next to DATABASE_URL when set (dropped at exit), else a
temporary SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PYTHON, ROOT, fresh_database, machine  # noqa: E402

MEMORY_ROWS = 10_000


@dataclass
class Case:
    name: str
    model: str
    input_format: str
    rows: int


@dataclass
class Outcome:
    case: Case
    job_rows_per_second: float
    end_to_end_rows_per_second: float
    raw_rows_per_second: float
    compute_rows_per_second: float
    peak_rss_small_mb: float
    peak_rss_large_mb: float
    job_cpu_rows_per_second: float
    raw_cpu_rows_per_second: float

    @property
    def ratio(self) -> float:
        return self.job_rows_per_second / self.raw_rows_per_second

    @property
    def cpu_ratio(self) -> float:
        return self.job_cpu_rows_per_second / self.raw_cpu_rows_per_second

    def row(self) -> str:
        c = self.case
        return (
            f"| {c.name} | {c.input_format} | {c.rows:,} | {self.job_rows_per_second:,.0f} | "
            f"{self.end_to_end_rows_per_second:,.0f} | {self.raw_rows_per_second:,.0f} | {self.ratio:.2f}x | "
            f"{self.compute_rows_per_second:,.0f} | {self.peak_rss_small_mb:.0f} | {self.peak_rss_large_mb:.0f} | "
            f"{self.job_cpu_rows_per_second:,.0f} | {self.raw_cpu_rows_per_second:,.0f} | {self.cpu_ratio:.2f}x |"
        )


# --- set-up -----------------------------------------------------------------------------------


def bench_env(workdir: Path) -> dict[str, str]:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker:
        raise SystemExit("bench/jobs.py runs jobs on a Celery worker: set CELERY_BROKER_URL (a Redis URL).")
    env = dict(os.environ)
    env.update(
        DEBUG="true",
        SECRET_KEY="bench-" + uuid.uuid4().hex,
        MODEL_STORAGE_PATH=str(workdir / "models"),
        JOB_STORAGE_PATH=str(workdir / "jobs"),
        JOB_MAX_INPUT_FILE_MB="1024",
        CELERY_BROKER_KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}:",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL"), workdir)
    return env


def build_mlp() -> bytes:
    """A wide MLP: 256 inputs, hidden layers 1024-1024-1024, one output (one epoch of training
    on random data: the weights' values do not matter for speed)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    features = rng.standard_normal((512, 256)).astype(np.float32)
    target = rng.standard_normal(512).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regressor = MLPRegressor(hidden_layer_sizes=(1024, 1024, 1024), max_iter=1, random_state=0)
        regressor.fit(features, target)
    return to_onnx(regressor, features[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


def register(name: str, data: bytes):
    import io

    from registry import services

    staged = services.stage_stream(io.BytesIO(data))
    return services.model_register(name=name, version="1.0.0", staged=staged, inline=True)


def write_input(workdir: Path, name: str, rows: np.ndarray, input_format: str) -> Path:
    path = workdir / f"{name}-{len(rows)}.{input_format}"
    if input_format == "npy":
        np.save(path, rows)
        return path
    with open(path, "wb") as handle:
        for start in range(0, len(rows), 10_000):
            batch = rows[start : start + 10_000]
            handle.write(b"".join(orjson.dumps({"X": row.tolist()}) + b"\n" for row in batch))
    return path


# --- the worker ---------------------------------------------------------------------------------


class Worker:
    def __init__(self, env: dict, log: Path):
        self.name = f"bench-{uuid.uuid4().hex[:6]}@%h"
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        command = [
            PYTHON, "-m", "celery", "-A", "modelforge_site", "worker", "-Q", "high,normal,low",
            "--concurrency", "1", "--pool", "prefork", "--hostname", self.name,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        self.log = log
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)

    def _pool(self) -> list[str]:
        return Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()

    def pool_cpu_seconds(self) -> float:
        """CPU time (user + system) of the pool process so far: what a job cost, whatever else
        the machine was running meanwhile."""
        ticks = 0
        for pid in self._pool():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def pool_peak_rss_mb(self) -> float:
        peak = 0
        for pid in self._pool():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        return peak / 1024

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


class StagedUpload:
    """What jobs.uploads leaves for job_create: a named temporary file beside the job folders."""

    def __init__(self, source: Path, temp_dir: Path):
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.path = temp_dir / f"{uuid.uuid4().hex}.upload"
        os.link(source, self.path)  # job_create moves it into the job's folder
        self.name = source.name
        self.size = source.stat().st_size

    def temporary_file_path(self) -> str:
        return str(self.path)

    def close(self) -> None:
        pass


def run_job(model, path: Path, input_format: str, timeout: float = 1800.0):
    from django.conf import settings

    from jobs import services
    from jobs.models import Job

    upload = StagedUpload(path, Path(settings.JOB_STORAGE_PATH) / "tmp")
    job = services.job_create(model=model, input_file=upload, input_format=input_format)
    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.is_terminal:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job.pk} did not finish in {timeout} s")
        time.sleep(0.05)
    if job.status != Job.Status.COMPLETED:
        raise SystemExit(f"job {job.pk} ended {job.status}: {job.error_code} {job.error_message}")
    return job


# --- the baseline --------------------------------------------------------------------------


def raw_rows_per_second(
    model_bytes: bytes, path: Path, input_format: str, input_name: str, out: Path, chunk_rows: int
) -> tuple[float, float]:
    """The job's work without ModelForge: read, run in the same chunks, write JSON Lines."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = 0
    with open(out, "wb") as sink:

        def run(batch: np.ndarray) -> None:
            outputs = session.run(None, {input_name: batch})
            columns = [value.tolist() for value in outputs]
            rows_out = zip(*columns, strict=True)
            sink.write(b"".join(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n" for row in rows_out))

        if input_format == "npy":
            array = np.load(path, mmap_mode="r")
            for start in range(0, len(array), chunk_rows):
                batch = np.array(array[start : start + chunk_rows], dtype=np.float32)
                run(batch)
                rows += len(batch)
        else:
            with open(path, "rb") as source:
                chunk: list = []
                for line in source:
                    chunk.append(orjson.loads(line)[input_name])
                    if len(chunk) == chunk_rows:
                        run(np.asarray(chunk, dtype=np.float32))
                        rows += len(chunk)
                        chunk = []
                if chunk:
                    run(np.asarray(chunk, dtype=np.float32))
                    rows += len(chunk)
    return rows / (time.perf_counter() - started), rows / (time.process_time() - cpu_started)


def compute_rows_per_second(model_bytes: bytes, rows: np.ndarray, input_name: str, chunk_rows: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    for start in range(0, len(rows), chunk_rows):
        session.run(None, {input_name: rows[start : start + chunk_rows]})
    return len(rows) / (time.perf_counter() - started)


def forget_queues(env: dict) -> None:
    """Drop the bench's keys (its prefix) from the broker's Redis database."""
    import redis

    client = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    keys = list(client.scan_iter(match=env["CELERY_BROKER_KEY_PREFIX"] + "*", count=1000))
    if keys:
        client.delete(*keys)


# --- main ---------------------------------------------------------------------------------------


def measure(case: Case, model, model_bytes: bytes, files: dict, env: dict, workdir: Path, repeats: int) -> Outcome:
    """Peak RSS from the first job of each size on a fresh worker; rows/s as the best of
    ``repeats`` large jobs (and of as many baseline runs): the machine may be shared."""
    small, large = files[(MEMORY_ROWS, case.input_format)], files[(case.rows, case.input_format)]
    peaks = []
    jobs = []
    cpu_seconds = []
    for path in (small, large):
        worker = Worker(env, workdir / f"worker-{case.name}-{case.input_format}.log")
        try:
            run_job(model, files[(100, case.input_format)], case.input_format)  # loads the session
            for attempt in range(repeats if path == large else 1):
                cpu_before = worker.pool_cpu_seconds()
                jobs.append(run_job(model, path, case.input_format))
                cpu_seconds.append(worker.pool_cpu_seconds() - cpu_before)
                if attempt == 0:
                    peaks.append(worker.pool_peak_rss_mb())
        finally:
            worker.stop()
    jobs, cpu_seconds = jobs[1:], cpu_seconds[1:]  # the large ones
    run_seconds = min((job.finished_at - job.started_at).total_seconds() for job in jobs)
    total_seconds = min((job.finished_at - job.created_at).total_seconds() for job in jobs)
    from jobs.batch_io import chunk_rows_for

    chunk_rows = chunk_rows_for(model)  # what the worker used
    model_path = workdir / f"{case.name}.onnx"
    model_path.write_bytes(model_bytes)
    raw, raw_cpu, compute = raw_baseline(model_path, large, case.input_format, chunk_rows, workdir, repeats)
    job_cpu = case.rows / max(min(cpu_seconds), 1 / os.sysconf("SC_CLK_TCK"))
    return Outcome(case, case.rows / run_seconds, case.rows / total_seconds, raw, compute, *peaks, job_cpu, raw_cpu)


def raw_baseline(
    model_path: Path, path: Path, input_format: str, chunk_rows: int, workdir: Path, repeats: int
) -> tuple[float, float, float]:
    """(rows/s with the job's I/O, the same per CPU second, rows/s of compute alone), measured in a fresh process that
    imports only numpy, orjson and onnxruntime (this one has Django loaded, whose heap would
    slow the garbage collector down and so the baseline)."""
    command = [PYTHON, __file__, "--raw", str(model_path), str(path), input_format, str(chunk_rows), str(workdir)]
    command.append(str(repeats))
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    raw, raw_cpu, compute = done.stdout.split()
    return float(raw), float(raw_cpu), float(compute)


def raw_main(model_path: str, path: str, input_format: str, chunk_rows: str, workdir: str, repeats: str) -> None:
    model_bytes = Path(model_path).read_bytes()
    out = Path(workdir) / "raw-output.jsonl"
    chunk = int(chunk_rows)
    runs = [raw_rows_per_second(model_bytes, Path(path), input_format, "X", out, chunk) for _ in range(int(repeats))]
    raw, raw_cpu = max(wall for wall, _ in runs), max(cpu for _, cpu in runs)
    if input_format == "npy":
        rows = np.load(path)
    else:
        rows = np.asarray([orjson.loads(line)["X"] for line in Path(path).read_bytes().splitlines()], dtype=np.float32)
    compute = max(compute_rows_per_second(model_bytes, rows, "X", chunk) for _ in range(int(repeats)))
    print(raw, raw_cpu, compute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--models", default="iris,mlp")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (a shared machine is noisy)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-bench-jobs-"))
    env = bench_env(workdir)
    os.environ.update(env)
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
    import django

    django.setup()
    from registry.demo import build_iris_onnx

    rng = np.random.default_rng(0)
    # The MLP's rows as JSON Lines would be 500 MB of text at 100,000 rows: wide numeric data
    # travels as .npy.
    specs = {
        "iris": (
            build_iris_onnx,
            lambda n: np.round(rng.uniform(0.1, 7.9, size=(n, 4)), 2).astype(np.float32),
            ["jsonl", "npy"],
        ),
        "mlp": (build_mlp, lambda n: rng.standard_normal((n, 256)).astype(np.float32), ["npy"]),
    }
    outcomes = []
    for name in args.models.split(","):
        build, make_rows, formats = specs[name]
        model_bytes = build()
        model = register(name, model_bytes)
        rows = make_rows(args.rows)
        files = {
            (count, file_format): write_input(workdir, name, rows[:count], file_format)
            for count in (100, MEMORY_ROWS, args.rows)
            for file_format in formats
        }
        for file_format in formats:
            case = Case(name, name, file_format, args.rows)
            outcome = measure(case, model, model_bytes, files, env, workdir, args.repeats)
            print(outcome.row(), flush=True)
            outcomes.append(outcome)

    forget_queues(env)
    print(f"\nMachine: {machine()}")
    from django.conf import settings

    print(
        f"Database: {env['DATABASE_URL'].split(':')[0]}; chunks of up to {settings.JOB_CHUNK_ROWS:,} rows and "
        f"{settings.MAX_INPUT_ELEMENTS:,} input values; ONNX Runtime: 1 intra-op thread\n"
    )
    print(
        "| model | input | rows | job rows/s (run) | job rows/s (created to done) | raw rows/s (same I/O) | "
        f"job/raw | raw compute only rows/s | peak RSS MB at {MEMORY_ROWS:,} | peak RSS MB at {args.rows:,} | "
        "job rows per CPU s | raw rows per CPU s | job/raw (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for outcome in outcomes:
        print(outcome.row())
    for outcome in outcomes:
        c = outcome.case
        growth = outcome.peak_rss_large_mb - outcome.peak_rss_small_mb
        print(
            f"[{c.name}/{c.input_format}] job vs raw: {outcome.ratio:.2f}x (target >= 0.7), per CPU second "
            f"{outcome.cpu_ratio:.2f}x; "
            f"peak RSS {outcome.peak_rss_small_mb:.0f} -> {outcome.peak_rss_large_mb:.0f} MB "
            f"({growth:+.0f} MB, target: flat)"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw"]:
        raw_main(*sys.argv[2:])
    else:
        main()
