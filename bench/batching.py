"""Benchmark: /v2 binary inference with dynamic batching, on the production server configuration.

In one run, on loopback, 16 concurrent connections (wrk), one row per request:
- a wide MLP (256 inputs, three hidden layers of 1024, 8 outputs; scikit-learn + skl2onnx):
  /v2 binary with batching on, the same with batching off, and a minimal FastAPI + onnxruntime
  JSON endpoint with the same number of worker processes;
- the iris classifier: /v2 binary against /v2 JSON;
- the bound: bench/lean_server.py (the leanest Python batching server, none of ModelForge's
  per-request work) with batching on and off, with the same number of processes and with one.
Prints req/s, p50, p99 and the ratios against the targets.

    .venv/bin/python bench/batching.py [--seconds 20] [--connections 16] [--workers N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PYTHON,
    free_port,
    machine,
    manage,
    running,
    serve_command,
    server_env,
    wrk,
)

MLP_NAME, IRIS_NAME = "wide-mlp", "iris-classifier"


def build_wide_mlp() -> bytes:
    """256 inputs, three hidden layers of 1024, 8 outputs (class probabilities, shape [N, 8])."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    features = rng.standard_normal((512, 256)).astype(np.float32)
    labels = np.arange(512) % 8
    mlp = MLPClassifier(hidden_layer_sizes=(1024, 1024, 1024), max_iter=1).fit(features, labels)
    options = {id(mlp): {"zipmap": False}}
    return to_onnx(mlp, features[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


def binary_request(name: str, row: np.ndarray, output: str | None) -> tuple[bytes, dict]:
    """A /v2 infer body with one binary FP32 input (and a binary output), as tritonclient sends."""
    raw = row.astype("<f4").tobytes()
    header = {
        "inputs": [
            {"name": name, "shape": list(row.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ],
        # Every request sends the same row: skip the prediction cache so the model really runs.
        "parameters": {"binary_data_output": True, "skip_cache": True},
    }
    if output:
        header["outputs"] = [{"name": output, "parameters": {"binary_data": True}}]
    encoded = json.dumps(header).encode()
    return encoded + raw, {"Inference-Header-Content-Length": str(len(encoded)), "Content-Type": ""}


def json_request(name: str, row: np.ndarray) -> bytes:
    tensor = {"name": name, "shape": list(row.shape), "datatype": "FP32", "data": row.ravel().tolist()}
    return json.dumps({"inputs": [tensor], "parameters": {"skip_cache": True}}).encode()


def api(url: str, key: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (loopback)
    with urllib.request.urlopen(request) as response:  # noqa: S310
        return json.loads(response.read() or b"{}")


def raw_per_row_us(mlp_path: Path, rng: np.random.Generator) -> dict[int, float]:
    """What batching has to give: microseconds per row of raw session.run, alone and in 16s."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(mlp_path), options, providers=["CPUExecutionProvider"])
    found = {}
    for rows in (1, 16):
        feed = {"X": rng.standard_normal((rows, 256)).astype(np.float32)}
        for _ in range(20):
            session.run(None, feed)
        runs = 1600 // rows
        started = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        found[rows] = (time.perf_counter() - started) / runs / rows * 1e6
    return found


def minimal_fastapi(mlp_path: Path, body: bytes, *, workers: int, connections: int, seconds: int):
    """The baseline: bench/minimal_server.py under uvicorn with this many worker processes."""
    port = free_port()
    command = [
        PYTHON, "-m", "uvicorn", "bench.minimal_server:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    env = dict(os.environ, MODEL_PATH=str(mlp_path))
    with running(command, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_name="minimal-mlp"):
        url = f"http://127.0.0.1:{port}/predict"
        wrk("warm-up", url, body, connections=connections, seconds=2)
        label = f"MLP minimal FastAPI JSON, {workers} worker(s), {connections} conns"
        return wrk(label, url, body, connections=connections, seconds=seconds)


def lean_bound(
    mlp_path: Path, body: bytes, headers: dict, workers: int, batch: bool, args, interface: str, work_us: int = 0
):
    """bench/lean_server.py under granian: RSGI with as many run threads per process as cores
    allow, or WSGI with the blocking threads ModelForge gets; `work_us` of interpreter work per
    request on top (bench/budget.py)."""
    run_threads = max(1, (os.cpu_count() or 1) // workers)
    port = free_port()
    env = dict(
        os.environ,
        MODEL_PATH=str(mlp_path),
        BATCH="1" if batch else "0",
        RUN_THREADS=str(run_threads),
        MAX_BATCH=str(args.max_batch),
        WORK_US=str(work_us),
    )
    command = [
        PYTHON, "-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log",
    ]  # fmt: skip
    if interface == "wsgi":
        command += ["--blocking-threads", str(args.threads), "bench.lean_server:wsgi_app"]
        threads = f"{args.threads} threads"
    else:
        command += ["bench.lean_server:app"]
        threads = f"asyncio, {run_threads} run thread(s)"
    url = f"http://127.0.0.1:{port}/"
    label = f"MLP lean {interface.upper()}, {workers} process(es), {threads}, batching {'on' if batch else 'off'}"
    if work_us:
        label += f", {work_us} us work"
    c, s = args.connections, args.seconds
    with running(command, env=env, ready_url=url, log_name="lean"):
        wrk("warm-up", url, body, connections=c, seconds=2, headers=headers)
        return wrk(label, url, body, connections=c, seconds=s, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--threads", type=int, default=8, help="blocking threads per worker")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=500, help="max_queue_delay_microseconds (the registry default)")
    args = parser.parse_args()
    c, s = args.connections, args.seconds

    from registry.demo import build_iris_onnx

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-bench-"))
    env = server_env(workdir)
    source = workdir / "source"
    source.mkdir()
    mlp_path = source / f"{MLP_NAME}-1.0.0.onnx"
    mlp_path.write_bytes(build_wide_mlp())
    (source / f"{IRIS_NAME}-1.0.0.onnx").write_bytes(build_iris_onnx())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict,manage").strip()
    auth = {"Authorization": f"Bearer {key}"}

    rng = np.random.default_rng(1)
    mlp_row = rng.standard_normal((1, 256)).astype(np.float32)
    per_row = raw_per_row_us(mlp_path, rng)
    print(f"raw onnxruntime, one thread, wide MLP: {per_row[1]:.0f} us per row alone, "
          f"{per_row[16]:.0f} us per row in a batch of 16: the model's own gain from batching is "
          f"{per_row[1] / per_row[16]:.2f}x, more than any server's batching on / off can be", flush=True)  # fmt: skip
    iris_row = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    mlp_binary, mlp_headers = binary_request("X", mlp_row, "probabilities")
    iris_binary, iris_headers = binary_request("X", iris_row, None)
    iris_json = json_request("X", iris_row)

    mlp_json = json.dumps({"input_data": {"X": mlp_row.tolist()}}).encode()
    baseline = minimal_fastapi(mlp_path, mlp_json, workers=args.workers, connections=c, seconds=s)
    print(baseline.row(), flush=True)

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    server = dict(env, WEB_WORKERS=str(args.workers), WEB_THREADS=str(args.threads))
    with running(
        serve_command(port, args.workers, args.threads),
        env=server,
        ready_url=f"{root}/api/v1/ready",
        log_name="granian-v2",
    ):
        mlp = api(f"{root}/api/v1/models/by-name/{MLP_NAME}/latest", key)
        infer = f"{root}/v2/models/{MLP_NAME}/infer"
        settings_on = {"enabled": True, "max_batch_size": args.max_batch, "max_queue_delay_microseconds": args.delay_us}
        api(f"{root}/api/v1/models/{mlp['id']}", key, "PATCH", {"batching": settings_on})
        wrk("warm-up", infer, mlp_binary, connections=c, seconds=3, headers={**auth, **mlp_headers})
        batched = wrk(
            f"MLP v2 binary, batching on, {c} conns",
            infer,
            mlp_binary,
            connections=c,
            seconds=s,
            headers={**auth, **mlp_headers},
        )
        print(batched.row(), flush=True)
        api(f"{root}/api/v1/models/{mlp['id']}", key, "PATCH", {"batching": {"enabled": False}})
        wrk("warm-up", infer, mlp_binary, connections=c, seconds=2, headers={**auth, **mlp_headers})
        unbatched = wrk(
            f"MLP v2 binary, batching off, {c} conns",
            infer,
            mlp_binary,
            connections=c,
            seconds=s,
            headers={**auth, **mlp_headers},
        )
        print(unbatched.row(), flush=True)

        iris_infer = f"{root}/v2/models/{IRIS_NAME}/infer"
        wrk("warm-up", iris_infer, iris_binary, connections=c, seconds=2, headers={**auth, **iris_headers})
        iris_bin = wrk(
            f"iris v2 binary, {c} conns",
            iris_infer,
            iris_binary,
            connections=c,
            seconds=s,
            headers={**auth, **iris_headers},
        )
        iris_js = wrk(f"iris v2 JSON, {c} conns", iris_infer, iris_json, connections=c, seconds=s, headers=auth)
        print(iris_bin.row(), iris_js.row(), sep="\n", flush=True)
    results = [baseline, batched, unbatched, iris_bin, iris_js]

    # The bound: the leanest batching server (bench/lean_server.py, none of ModelForge's
    # per-request work), batching on and off, with as many processes as above and with one;
    # FastAPI with one process too, for the one-process ratio.
    lean, fastapi = {}, {args.workers: baseline}
    for workers in sorted({args.workers, 1}, reverse=True):
        if workers not in fastapi:
            fastapi[workers] = minimal_fastapi(mlp_path, mlp_json, workers=workers, connections=c, seconds=s)
            results.append(fastapi[workers])
        for interface in ("rsgi", "wsgi"):
            for batch in (True, False):
                found = lean[interface, workers, batch] = lean_bound(
                    mlp_path, mlp_binary, mlp_headers, workers, batch, args, interface
                )
                print(found.row(), flush=True)
                results.append(found)

    print(f"\nMachine: {machine()}; {args.workers} workers each, {args.threads} threads per worker; "
          f"batching max {args.max_batch} rows, delay {args.delay_us} us; raw onnxruntime {per_row[1]:.0f} us "
          f"per row alone, {per_row[16]:.0f} us in a batch of 16")  # fmt: skip
    print("| configuration | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for result in results:
        print(result.row())
    print(f"\nbatching on vs off: {batched.requests_per_second / unbatched.requests_per_second:.2f}x (target >= 2.5)")
    versus_minimal = batched.requests_per_second / baseline.requests_per_second
    print(f"batching on vs minimal FastAPI JSON: {versus_minimal:.2f}x (target >= 3)")
    print(f"p99 batched / unbatched: {batched.p99_ms / unbatched.p99_ms:.2f} (target <= 2)")
    print(f"iris v2 binary vs JSON: {iris_bin.requests_per_second / iris_js.requests_per_second:.2f}x (target >= 1.2)")
    for (interface, workers, batch), on in lean.items():
        if not batch:
            continue
        off = lean[interface, workers, False]
        print(
            f"lean {interface.upper()}, {workers} process(es): batching on vs off "
            f"{on.requests_per_second / off.requests_per_second:.2f}x, vs minimal FastAPI JSON (as many "
            f"processes) {on.requests_per_second / fastapi[workers].requests_per_second:.2f}x, "
            f"p99 on / off {on.p99_ms / off.p99_ms:.2f}"
        )
    best = max(found.requests_per_second for (_i, _w, batch), found in lean.items() if batch)
    print(f"ModelForge batched vs the best lean server: {batched.requests_per_second / best:.2f}x")


if __name__ == "__main__":
    main()
