"""Benchmark: a 100,000-row iris job with its files on the local disk vs in an S3 bucket.

Three set-ups, run in turn (A, B, C, A, B, C, ...) for ``--rounds`` rounds, each job on a fresh
`celery worker` (concurrency 1) against PostgreSQL, Redis and moto's S3 server on loopback:

    A  disk      models on the filesystem, job files on the local disk (one host, today's default)
    B  disk+s3   models in the bucket, job files on the local disk (JOB_STORAGE_BACKEND=local)
    C  s3        models and job files in the bucket (the default with MODEL_STORAGE_BACKEND=s3):
                 the input uploaded by the API, read by ranged GETs, the output a multipart upload

C against B is what moving the job files costs (the same worker code, boto3 loaded in both);
C against A is the whole S3 deployment against the single host, boto3's own memory included.

Per job: the worker's peak RSS (the highest VmHWM in its process tree, main process and pool,
after a 100-row warm-up job and the big one), rows/s of the run on the worker (started to
finished, from the job's row), rows/s from the API's create call to the end (which includes
storing the input), and for C the CPU seconds moto's server spent meanwhile (is it the
bottleneck?). Medians over the rounds and their ratios are printed last. Targets: peak RSS
within 10% of the disk run, throughput at least 0.8x.

    .venv/bin/python bench/job_storage.py [--rows 100000] [--rounds 3] [--format jsonl]

Needs CELERY_BROKER_URL (Redis; a key prefix keeps the bench's queues apart) and moto_server
(requirements/dev.txt). Uses a fresh database next to DATABASE_URL when set (dropped at exit),
else a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PYTHON, ROOT, fresh_database, machine  # noqa: E402
from bench.jobs import StagedUpload, Worker, forget_queues, register, write_input  # noqa: E402
from tests.s3_server import MotoServer, s3_environment  # noqa: E402

SETUPS = {
    "A": "disk (models and job files on the filesystem)",
    "B": "disk+s3 (models in the bucket, job files on disk)",
    "C": "s3 (models and job files in the bucket)",
}


@dataclass
class Run:
    setup: str
    round: int
    peak_rss_mb: float
    pool_peak_rss_mb: float
    run_rows_per_second: float
    total_rows_per_second: float
    create_ms: float
    worker_cpu_seconds: float
    moto_cpu_seconds: float | None

    def row(self) -> str:
        moto = f"{self.moto_cpu_seconds:.2f}" if self.moto_cpu_seconds is not None else "-"
        return (
            f"| {self.round} | {self.setup} | {self.peak_rss_mb:.1f} | {self.pool_peak_rss_mb:.1f} | "
            f"{self.run_rows_per_second:,.0f} | {self.total_rows_per_second:,.0f} | {self.create_ms:.0f} | "
            f"{self.worker_cpu_seconds:.2f} | {moto} |"
        )


def tree_peak_rss_mb(pid: int) -> tuple[float, float]:
    """(the highest VmHWM in the process tree, the pool processes' highest) in MB."""
    root = psutil.Process(pid)
    peaks: dict[int, float] = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(FileNotFoundError, psutil.NoSuchProcess):
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[process.pid] = int(line.split()[1]) / 1024
    pool = [peak for pid_, peak in peaks.items() if pid_ != pid]
    return max(peaks.values()), max(pool, default=0.0)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_job(model, path: Path, input_format: str, timeout: float = 1800.0):
    """Create a job from a staged upload (what jobs.uploads leaves) and wait for its end."""
    from django.conf import settings

    from jobs import services

    upload = StagedUpload(path, Path(settings.JOB_STORAGE_PATH) / "tmp")
    started = time.perf_counter()
    job = services.job_create(model=model, input_file=upload, input_format=input_format)
    create_ms = (time.perf_counter() - started) * 1000
    deadline = time.monotonic() + timeout
    while not job.is_terminal:
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job.pk} did not finish in {timeout} s")
        time.sleep(0.02)
        job.refresh_from_db()
    if job.status != "completed":
        raise SystemExit(f"job {job.pk} ended {job.status}: {job.error_code} {job.error_message}")
    return job, create_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "npy"])
    args = parser.parse_args()

    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker:
        raise SystemExit("bench/job_storage.py runs jobs on a Celery worker: set CELERY_BROKER_URL (a Redis URL).")
    workdir = Path(tempfile.mkdtemp(prefix="modelforge-bench-job-storage-"))
    moto = MotoServer(workdir / "moto.log").start()
    try:
        bench(args, workdir, moto, broker)
    finally:
        moto.stop()


def bench(args, workdir: Path, moto: MotoServer, broker: str) -> None:
    bucket = moto.new_bucket()
    s3 = {**s3_environment(moto, bucket, workdir / "api-model-cache"), "S3_MAX_ATTEMPTS": "3"}
    env = dict(os.environ)
    env.update(
        DEBUG="true",
        SECRET_KEY="bench-" + uuid.uuid4().hex,
        MODEL_STORAGE_PATH=str(workdir / "models"),
        JOB_STORAGE_PATH=str(workdir / "jobs"),  # shared by the API (here) and the worker in A and B
        JOB_MAX_INPUT_FILE_MB="1024",
        CELERY_BROKER_KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}:",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **s3,
    )
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL"), workdir, "jobstorage")
    os.environ.update(env)
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import override_settings

    from registry.demo import build_iris_onnx
    from registry.storage import ModelStore

    # The model once in the bucket (this process's settings) and once on the filesystem.
    model_bytes = build_iris_onnx()
    model = register("iris", model_bytes)
    local_copy = Path(workdir / "models") / ModelStore.name_for(model.file_sha256)
    local_copy.parent.mkdir(parents=True, exist_ok=True)
    local_copy.write_bytes(model_bytes)

    rng = np.random.default_rng(0)
    rows = np.round(rng.uniform(0.1, 7.9, size=(args.rows, 4)), 2).astype(np.float32)
    small = write_input(workdir, "iris", rows[:100], args.format)
    large = write_input(workdir, "iris", rows, args.format)

    filesystem = {"BACKEND": "registry.storage.ModelFileStorage"}
    api_settings = {
        "A": {
            "MODEL_STORAGE_BACKEND": "filesystem",
            "JOB_STORAGE_BACKEND": "local",
            "STORAGES": {**settings.STORAGES, "models": filesystem},
        },
        "B": {"JOB_STORAGE_BACKEND": "local"},
        "C": {"JOB_STORAGE_BACKEND": "s3"},
    }

    def worker_env(setup: str, run: int) -> dict:
        cache = str(workdir / f"worker-model-cache-{run}")
        if setup == "A":
            drop = set(s3) - {"MODEL_CACHE_PATH"}
            return {
                **{k: v for k, v in env.items() if k not in drop},
                "MODEL_STORAGE_BACKEND": "filesystem",
                "JOB_STORAGE_BACKEND": "local",
                "MODEL_CACHE_PATH": cache,
            }
        if setup == "B":
            return {**env, "JOB_STORAGE_BACKEND": "local", "MODEL_CACHE_PATH": cache}
        scratch = workdir / f"worker-scratch-{run}"  # not the API's folder: nothing is shared
        return {**env, "JOB_STORAGE_BACKEND": "s3", "JOB_STORAGE_PATH": str(scratch), "MODEL_CACHE_PATH": cache}

    runs: list[Run] = []
    print(f"{args.rows:,}-row iris job ({args.format}), {args.rounds} rounds of A, B, C; fresh worker per job\n")
    print(
        "| round | set-up | worker peak RSS MB (tree) | pool peak RSS MB | run rows/s | create-to-done rows/s | "
        "create ms | pool CPU s | moto CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for round_number in range(1, args.rounds + 1):
        for setup in "ABC":
            run_id = len(runs)
            worker = Worker(worker_env(setup, run_id), workdir / f"worker-{setup}-{round_number}.log")
            try:
                with override_settings(**api_settings[setup]):
                    run_job(model, small, args.format)  # loads the session (and fetches the model)
                    moto_before, pool_before = cpu_seconds(moto.process.pid), worker.pool_cpu_seconds()
                    job, create_ms = run_job(model, large, args.format)
                    moto_used = cpu_seconds(moto.process.pid) - moto_before
                    pool_used = worker.pool_cpu_seconds() - pool_before
                tree_peak, pool_peak = tree_peak_rss_mb(worker.process.pid)
            finally:
                worker.stop()
            seconds = (job.finished_at - job.started_at).total_seconds()
            total = (job.finished_at - job.created_at).total_seconds() + create_ms / 1000
            run = Run(
                setup,
                round_number,
                tree_peak,
                pool_peak,
                args.rows / seconds,
                args.rows / total,
                create_ms,
                pool_used,
                moto_used if setup != "A" else None,
            )
            runs.append(run)
            print(run.row(), flush=True)

    forget_queues(env)
    print(f"\nMachine: {machine()}")
    print(f"Database: {env['DATABASE_URL'].split(':')[0]}; S3: moto_server on loopback; set-ups: ")
    for setup, text in SETUPS.items():
        print(f"  {setup}: {text}")

    def median(setup: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs if run.setup == setup)

    print(
        "\n| median | peak RSS MB (tree) | pool peak RSS MB | run rows/s | create-to-done rows/s | create ms | "
        "pool CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    fields = [
        "peak_rss_mb",
        "pool_peak_rss_mb",
        "run_rows_per_second",
        "total_rows_per_second",
        "create_ms",
        "worker_cpu_seconds",
    ]
    for setup in "ABC":
        rss, pool, speed, total, create, cpu = (median(setup, field) for field in fields)
        print(f"| {setup} | {rss:.1f} | {pool:.1f} | {speed:,.0f} | {total:,.0f} | {create:.0f} | {cpu:.2f} |")
    for base in "BA":
        rss = median("C", "peak_rss_mb") / median(base, "peak_rss_mb")
        pool = median("C", "pool_peak_rss_mb") / median(base, "pool_peak_rss_mb")
        speed = median("C", "run_rows_per_second") / median(base, "run_rows_per_second")
        total = median("C", "total_rows_per_second") / median(base, "total_rows_per_second")
        cpu = median(base, "worker_cpu_seconds") / median("C", "worker_cpu_seconds")
        print(
            f"C/{base}: peak RSS {rss:.3f}x (pool {pool:.3f}x; target within 10%), run rows/s {speed:.2f}x, "
            f"create-to-done {total:.2f}x (target >= 0.8), rows per pool CPU second {cpu:.2f}x"
        )
    moto_cpu = statistics.median(run.moto_cpu_seconds for run in runs if run.setup == "C")
    run_seconds = args.rows / median("C", "run_rows_per_second")
    print(f"moto's server: {moto_cpu:.2f} CPU s per S3 job (its run: {run_seconds:.2f} s on the worker)")


if __name__ == "__main__":
    main()
