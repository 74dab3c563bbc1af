"""Benchmark: ModelForge at the defaults a user runs, against the minimal FastAPI endpoint (issue 18).

Starts, in one run and on loopback, with PostgreSQL and Redis on the same machine:
- ModelForge as `make serve` runs it (granian, one worker per core), history of every prediction
  on (the default), and a second one with HISTORY_SAMPLE_RATE=0;
- the minimal FastAPI + onnxruntime endpoint (bench/minimal_server.py: uvicorn with uvloop and
  httptools, as many workers), once on iris and once on the wide MLP.
Then drives them with wrk, alternating every configuration within each round (A, B, C, ...,
--rounds rounds of --seconds each), and prints every round, the medians and the ratios:
- iris JSON predict with `skip_cache`, and iris cache hits, history on and off, vs FastAPI;
- the wide MLP (256 inputs, 3 x 1024) over /v2 binary, batching on and off (history on), vs
  FastAPI JSON on the same model, with the bound (a + x) / (b + x): a and b the model's time
  per row alone and in a batch of 16 (raw onnxruntime, one thread), x the per-request work
  outside the model, derived from the unbatched run (cores / req/s - a);
- PostgreSQL's CPU per recorded prediction (the postgres processes' CPU time over the round,
  history on minus history off, divided by the rows written), and how long the last row of a
  round took to appear in the history after wrk stopped.

    .venv/bin/python bench/defaults.py [--rounds 3] [--seconds 8] [--connections 16]

Uses DATABASE_URL / REDIS_URL (a fresh database next to DATABASE_URL). Needs wrk and
requirements/bench.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batching import binary_request, build_wide_mlp, raw_per_row_us  # noqa: E402
from bench.harness import PYTHON, free_port, machine, manage, running, serve_command, server_env, wrk  # noqa: E402

IRIS, MLP, MLP_OFF = "iris-classifier", "wide-mlp", "wide-mlp-unbatched"
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]


def postgres_cpu() -> dict[int, int]:
    """Clock ticks of user + system CPU time of each postgres process on this machine so far."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if name.startswith("postgres"):
                fields = stat[stat.rindex(")") + 2 :].split()
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def postgres_cpu_since(before: dict[int, int]) -> float:
    """Seconds of CPU the postgres processes used since `before`: per process, so that one that
    ended meanwhile (a closed connection) takes only its own time out, never the others'."""
    after = postgres_cpu()
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / os.sysconf("SC_CLK_TCK")


def history_rows(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM inference_prediction").fetchone()[0]


def settle(database_url: str, expected: int, timeout: float = 30.0) -> float:
    """Seconds until the history holds `expected` rows (wrk has stopped)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if history_rows(database_url) >= expected:
            return time.monotonic() - started
        time.sleep(0.05)
    return float("nan")


def fastapi(model_path: Path, workers: int, label: str):
    port = free_port()
    command = [
        PYTHON, "-m", "uvicorn", "bench.minimal_server:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip
    env = dict(os.environ, MODEL_PATH=str(model_path))
    return port, running(command, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_name=label)


def modelforge(env: dict, workers: int, threads: int, label: str, **extra: str):
    port = free_port()
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    server = dict(env, WEB_WORKERS=str(workers), WEB_THREADS=str(threads), **extra)
    command = serve_command(port, workers, threads)
    return port, running(command, env=server, ready_url=f"http://127.0.0.1:{port}/api/v1/ready", log_name=label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--threads", type=int, default=int(os.environ.get("WEB_THREADS", "4")))
    parser.add_argument("--only", default="", help="comma-separated configuration names to run (default: all)")
    args = parser.parse_args()
    c, s = args.connections, args.seconds

    from registry.demo import build_iris_onnx

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-bench-"))
    env = server_env(workdir)
    if not env["DATABASE_URL"].startswith("postgres"):
        raise SystemExit("set DATABASE_URL to a PostgreSQL server: the history's cost is what is measured")
    source = workdir / "source"
    source.mkdir()
    iris_path = source / f"{IRIS}-1.0.0.onnx"
    iris_path.write_bytes(build_iris_onnx())
    mlp_path = source / f"{MLP}-1.0.0.onnx"
    mlp_path.write_bytes(build_wide_mlp())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    manage(env, "shell", "-c", (
        "from registry.models import MLModel;"
        f"m = MLModel.objects.get(name={MLP!r});"
        f"m.batching_enabled = True; m.save(update_fields=['batching_enabled'])"
    ))  # fmt: skip
    (unbatched_dir := workdir / "unbatched").mkdir()
    (unbatched_dir / f"{MLP_OFF}-1.0.0.onnx").write_bytes(mlp_path.read_bytes())
    manage(env, "import_models", str(unbatched_dir))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict").strip()
    auth = {"Authorization": f"Bearer {key}"}

    rng = np.random.default_rng(1)
    per_row = raw_per_row_us(mlp_path, rng)
    a_us, b_us = per_row[1], per_row[16]
    mlp_row = rng.standard_normal((1, 256)).astype(np.float32)
    mlp_binary, mlp_headers = binary_request("X", mlp_row, "probabilities")
    mlp_json = json.dumps({"input_data": {"X": mlp_row.tolist()}}).encode()
    fresh = json.dumps({"input_data": {"X": IRIS_ROW}, "skip_cache": True}).encode()
    cached = json.dumps({"input_data": {"X": IRIS_ROW}}).encode()

    # As `make serve` runs it: Prometheus in multiprocess mode (a directory per server).
    env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "prometheus-on")
    on_port, on_server = modelforge(env, args.workers, args.threads, "defaults-on")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "prometheus-off")
    off_port, off_server = modelforge(env, args.workers, args.threads, "defaults-off", HISTORY_SAMPLE_RATE="0")
    iris_port, iris_server = fastapi(iris_path, args.workers, "fastapi-iris")
    mlp_port, mlp_server = fastapi(mlp_path, args.workers, "fastapi-mlp")

    def ours(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    predict = f"/api/v1/models/by-name/{IRIS}/predict"
    configurations = {
        "fastapi-iris": (ours(iris_port, "/predict"), cached, {}, None),
        "iris-skip-on": (ours(on_port, predict), fresh, auth, "on"),
        "iris-skip-off": (ours(off_port, predict), fresh, auth, None),
        "iris-hits-on": (ours(on_port, predict), cached, auth, "on"),
        "iris-hits-off": (ours(off_port, predict), cached, auth, None),
        "fastapi-mlp": (ours(mlp_port, "/predict"), mlp_json, {}, None),
        "mlp-batched": (ours(on_port, f"/v2/models/{MLP}/infer"), mlp_binary, {**auth, **mlp_headers}, "on"),
        "mlp-unbatched": (ours(on_port, f"/v2/models/{MLP_OFF}/infer"), mlp_binary, {**auth, **mlp_headers}, "on"),
    }
    if args.only:
        wanted = set(args.only.split(","))
        configurations = {name: found for name, found in configurations.items() if name in wanted}
    results: dict[str, list] = {name: [] for name in configurations}
    pg_per_request: dict[str, list[float]] = {name: [] for name in configurations}
    settles: list[float] = []

    with on_server, off_server, iris_server, mlp_server:
        for url, body, headers, _history in configurations.values():
            wrk("warm-up", url, body, connections=c, seconds=2, headers=headers)
        for round_ in range(args.rounds):
            for name, (url, body, headers, history) in configurations.items():
                rows_before = history_rows(env["DATABASE_URL"]) if history else 0
                cpu_before = postgres_cpu()
                found = wrk(f"{name} (round {round_ + 1})", url, body, connections=c, seconds=s, headers=headers)
                requests = found.requests_per_second * s
                if history:
                    settles.append(settle(env["DATABASE_URL"], rows_before + int(requests * 0.98)))
                else:
                    time.sleep(1.0)  # the same settling time for the other configurations
                pg_per_request[name].append(postgres_cpu_since(cpu_before) / requests * 1e6)
                results[name].append(found)
                print(f"{found.row()} pg {pg_per_request[name][-1]:.0f} us/request", flush=True)

    def median(name: str, attribute: str = "requests_per_second") -> float:
        return statistics.median(getattr(found, attribute) for found in results[name]) if results.get(name) else 0.0

    print(f"\nMachine: {machine()}; {args.workers} workers, {args.threads} threads each; {c} connections; "
          f"{args.rounds} rounds of {s} s, alternated; medians")  # fmt: skip
    print("| configuration | req/s | p50 ms | p99 ms | PostgreSQL CPU us per request |\n|---|---|---|---|---|")
    for name in results:
        print(f"| {name} | {median(name):,.0f} | {median(name, 'p50_ms'):.2f} | {median(name, 'p99_ms'):.2f} | "
              f"{statistics.median(pg_per_request[name]):.0f} |")  # fmt: skip

    def ratio(label: str, a: str, b: str, target: float) -> None:
        if median(a) and median(b):
            print(f"{label}: {median(a) / median(b):.2f}x (target >= {target})")

    print()
    ratio("iris skip_cache, history on vs FastAPI", "iris-skip-on", "fastapi-iris", 1.0)
    ratio("iris skip_cache, history on / off", "iris-skip-on", "iris-skip-off", 0.85)
    ratio("iris skip_cache, history off vs FastAPI", "iris-skip-off", "fastapi-iris", 1.0)
    ratio("iris cache hits, history on vs FastAPI", "iris-hits-on", "fastapi-iris", 2.0)
    ratio("iris cache hits, history on / off", "iris-hits-on", "iris-hits-off", 0.85)
    if results.get("iris-skip-on"):
        print(f"iris skip_cache p99, history on: {median('iris-skip-on', 'p99_ms'):.2f} ms (target <= 25)")
    if results.get("iris-skip-on") and results.get("iris-skip-off"):
        extra = statistics.median(pg_per_request["iris-skip-on"]) - statistics.median(pg_per_request["iris-skip-off"])
        print(f"PostgreSQL CPU per recorded prediction (iris, on minus off): {extra:.0f} us")
    ratio("wide MLP v2 binary batching on vs FastAPI JSON", "mlp-batched", "fastapi-mlp", 1.5)
    if median("mlp-batched") and median("mlp-unbatched"):
        cores = os.cpu_count() or 1
        x_us = cores / median("mlp-unbatched") * 1e6 - a_us
        bound = (a_us + x_us) / (b_us + x_us)
        on_off = median("mlp-batched") / median("mlp-unbatched")
        print(
            f"wide MLP raw onnxruntime: a = {a_us:.0f} us per row alone, b = {b_us:.0f} us in a batch of 16 "
            f"(the model's own gain {a_us / b_us:.1f}x); x = {cores} cores / unbatched req/s - a = {x_us:.0f} us"
        )
        print(f"wide MLP batching on / off: {on_off:.2f}x; bound (a + x) / (b + x) = {bound:.2f}x; "
              f"on/off is {on_off / bound:.2f} of it (target >= 0.8)")  # fmt: skip
    if settles:
        print(f"last history row of a round written {max(settles):.2f} s after wrk stopped at most "
              f"(median {statistics.median(settles):.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
