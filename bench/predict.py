"""Benchmark: /api/v1 predict on the production server configuration vs a minimal FastAPI endpoint.

Starts, in one run and on loopback: ModelForge under the production server (`make serve`:
granian, one worker per core unless --workers; `--server gunicorn` or `both` to compare) and a
minimal FastAPI + onnxruntime endpoint (bench/minimal_server.py, uvicorn with httptools and
uvloop, the same number of workers) serving the same iris model; drives both with wrk and
prints req/s, p50, p99 and the ratios against the targets.

    .venv/bin/python bench/predict.py [--seconds 20] [--connections 16] [--workers N] [--server S]

Uses DATABASE_URL / REDIS_URL when set (the recommended production set-up), else a temporary
SQLite file and the local-memory cache. Needs wrk (apt-get install wrk) and requirements/bench.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PYTHON,
    ROOT,
    free_port,
    machine,
    manage,
    running,
    serve_command,
    server_env,
    wrk,
)

ROW = [[5.1, 3.5, 1.4, 0.2]]


def prepare(workdir: Path, env: dict) -> tuple[Path, str]:
    """Register the iris model through import_models; return its file and an API key."""
    sys.path.insert(0, str(ROOT))
    from registry.demo import build_iris_onnx

    source = workdir / "source"
    source.mkdir()
    model_path = source / "iris-classifier-1.0.0.onnx"
    model_path.write_bytes(build_iris_onnx())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict").strip()
    return model_path, key


def raw_run_ms(model_path: Path, runs: int = 5000) -> float:
    """Median time of one session.run on the request's input, in this process."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feeds = {"X": np.asarray(ROW, dtype=np.float32)}
    for _ in range(200):
        session.run(None, feeds)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--threads", type=int, default=int(os.environ.get("WEB_THREADS", "4")))
    parser.add_argument("--server", choices=["granian", "gunicorn", "both"], default="granian")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-bench-"))
    env = server_env(workdir)
    model_path, key = prepare(workdir, env)
    auth = {"Authorization": f"Bearer {key}"}

    base_port = free_port()
    base_cmd = [
        PYTHON, "-m", "uvicorn", "bench.minimal_server:app", "--host", "127.0.0.1", "--port", str(base_port),
        "--workers", str(args.workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    base_env = dict(os.environ, MODEL_PATH=str(model_path))
    fresh = json.dumps({"input_data": {"X": ROW}, "skip_cache": True}).encode()
    cached = json.dumps({"input_data": {"X": ROW}}).encode()
    c, s, short = args.connections, args.seconds, max(5, args.seconds // 2)

    with running(base_cmd, env=base_env, ready_url=f"http://127.0.0.1:{base_port}/health", log_name="minimal"):
        base_url = f"http://127.0.0.1:{base_port}/predict"
        wrk("warm-up", base_url, cached, connections=c, seconds=2)
        baseline = wrk(f"minimal FastAPI, {c} conns", base_url, cached, connections=c, seconds=s)
        baseline_one = wrk("minimal FastAPI, 1 conn", base_url, cached, connections=1, seconds=short)
    print(baseline.row(), baseline_one.row(), sep="\n", flush=True)
    raw = raw_run_ms(model_path)

    servers = ["granian", "gunicorn"] if args.server == "both" else [args.server]
    rows = [baseline, baseline_one]
    summary = []
    for server in servers:
        port = free_port()
        if server == "granian":
            command = serve_command(port, args.workers, args.threads)
        else:
            command = [
                PYTHON,
                "-m",
                "gunicorn",
                "-c",
                "modelforge_site/gunicorn_conf.py",
                "modelforge_site.wsgi:application",
            ]
        server_env_ = dict(env, BIND=f"127.0.0.1:{port}", WEB_WORKERS=str(args.workers), WEB_THREADS=str(args.threads))
        url = f"http://127.0.0.1:{port}/api/v1/models/by-name/iris-classifier/predict"
        with running(command, env=server_env_, ready_url=f"http://127.0.0.1:{port}/api/v1/ready", log_name=server):
            request = urllib.request.Request(url, data=cached, headers=auth, method="POST")
            with urllib.request.urlopen(request) as response:  # noqa: S310 (loopback)
                assert response.status == 200
            wrk("warm-up", url, fresh, connections=c, seconds=2, headers=auth)
            label = f"ModelForge/{server}"
            ours = wrk(f"{label} skip_cache, {c} conns", url, fresh, connections=c, seconds=s, headers=auth)
            hits = wrk(f"{label} cache hits, {c} conns", url, cached, connections=c, seconds=s, headers=auth)
            one = wrk(f"{label} skip_cache, 1 conn", url, fresh, connections=1, seconds=short, headers=auth)
        for result in (ours, hits, one):
            print(result.row(), flush=True)
        rows += [ours, hits, one]
        summary.append((server, ours, hits, one))

    print(f"\nMachine: {machine()}; {args.workers} workers each ({args.threads} threads per worker)")
    cache_kind = "redis" if env.get("REDIS_URL") else "local memory"
    print(f"Database: {env['DATABASE_URL'].split(':')[0]}; cache: {cache_kind}\n")
    print("| configuration | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for result in rows:
        print(result.row())
    print(f"\nraw session.run median: {raw * 1000:.1f} us")
    base_rps = baseline.requests_per_second
    for server, ours, hits, one in summary:
        print(f"[{server}] skip_cache vs minimal: {ours.requests_per_second / base_rps:.2f}x (target >= 0.8)")
        print(f"[{server}] cache hits vs minimal: {hits.requests_per_second / base_rps:.2f}x (target >= 1.5)")
        print(f"[{server}] 1-connection p50 minus raw run: {one.p50_ms - raw:.2f} ms (target <= 1.5)")


if __name__ == "__main__":
    main()
