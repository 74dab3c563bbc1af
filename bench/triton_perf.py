"""Benchmark: Triton's own `perf_analyzer`, unchanged, against ModelForge over HTTP and gRPC.

Installs perf_analyzer (the binary in the `tritonclient==2.48.0` wheel, the newest that runs on
this machine's glibc) into its own virtual environment, with PyPI's `nvidia-cuda-runtime-cu12`
for the `libcudart` it links (no GPU is used) and Debian's `libb64-0d` (apt). Starts the
production servers as `make serve` does (granian for HTTP, `manage.py serve_grpc` for gRPC, the
same number of processes each), on a fresh database with two models, then:

1. the tables: `-i http` and `-i grpc`, binary tensors, concurrency 1 to 8, for the iris
   classifier and the wide MLP (256 inputs, 3x1024; dynamic batching on), as perf_analyzer prints
   them (throughput, p50/p99);
2. the ratios: gRPC against /v2 REST at one concurrency, the two alternated (A, B, A, B, ...)
   for --rounds rounds of --seconds each, medians: iris (raw contents against /v2 binary) and the
   wide MLP with dynamic batching.

perf_analyzer is the same client on both sides, so its own CPU (it shares the two cores) costs
both doors alike.

    .venv/bin/python bench/triton_perf.py [--rounds 3] [--seconds 6] [--concurrency 8] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batching import MLP_NAME, api, build_wide_mlp  # noqa: E402
from bench.harness import PYTHON, ROOT, free_port, machine, manage, running, serve_command, server_env  # noqa: E402

IRIS_NAME = "iris-classifier"
TRITONCLIENT = "tritonclient[all]==2.48.0"
TOOL_VENV = ROOT / "var" / "perf-analyzer-venv"


def perf_analyzer() -> tuple[Path, dict]:
    """The perf_analyzer binary and the environment it runs in, installed on first use."""
    binary = TOOL_VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        if subprocess.run(["dpkg", "-s", "libb64-0d"], capture_output=True).returncode:
            raise SystemExit("perf_analyzer needs Debian's libb64-0d: apt-get install -y libb64-0d")
        subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True)
        pip = [str(TOOL_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, TRITONCLIENT, "nvidia-cuda-runtime-cu12"], check=True, stderr=subprocess.DEVNULL)
    (cudart,) = TOOL_VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")
    return binary, dict(os.environ, LD_LIBRARY_PATH=str(cudart))


@dataclass
class Row:
    label: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float

    def line(self) -> str:
        return f"| {self.label} | {self.concurrency} | {self.throughput:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} |"


def run_perf_analyzer(
    tool: tuple[Path, dict],
    label: str,
    *,
    model: str,
    protocol: str,
    url: str,
    key: str,
    concurrency: str,
    shape: str,
    seconds: float,
) -> list[Row]:
    """perf_analyzer's measurement at each concurrency of the range, from its CSV report."""
    binary, env = tool
    with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as report:
        path = report.name
    command = [
        str(binary), "-m", model, "-i", protocol, "-u", url, "-H", f"authorization: Bearer {key}",
        "--concurrency-range", concurrency, "--shape", shape, "--input-data", "random",
        "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "100",
        "--max-trials", "10", "--percentile", "99", "-f", path,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode and "stable measurement" in done.stdout:
        # On a loaded machine three windows in a row may not agree even within 100%: once more.
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    try:
        if done.returncode:
            raise SystemExit(f"perf_analyzer failed ({' '.join(command)}):\n{done.stdout[-3000:]}\n{done.stderr}")
        if "error" in done.stdout.lower().replace("errors: 0", ""):
            print(done.stdout[-2000:], flush=True)
        with open(path, newline="") as source:
            rows = list(csv.DictReader(source))
    finally:
        os.unlink(path)
    found = [
        Row(
            label,
            int(row["Concurrency"]),
            float(row["Inferences/Second"]),
            float(row["p50 latency"]) / 1000,
            float(row["p99 latency"]) / 1000,
        )
        for row in rows
    ]
    return sorted(found, key=lambda row: row.concurrency)  # the report orders them by throughput


def shape_argument(root: str, key: str, model: str) -> str:
    """perf_analyzer's --shape for the model's one input: the dims its /config gives, the
    variable ones (and, unbatched, the batch dimension itself) set to 1."""
    config = api(f"{root}/v2/models/{model}/config", key)
    (entry,) = config["input"]
    dims = [1 if int(dim) < 0 else int(dim) for dim in entry["dims"]]
    return f"{entry['name']}:{','.join(map(str, dims))}"


def record(root: str, address: str, key: str, model: str) -> dict[str, str]:
    """ModelForge's answers to perf_analyzer's metadata, config and infer calls on both doors,
    for the canned servers (bench/canned_servers.py), base64."""
    import base64
    import urllib.request

    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def get(path: str, body: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{root}{path}", data=body, headers={"Authorization": f"Bearer {key}", **(headers or {})}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.read(), response.headers

    row = np.array([[5.1, 3.5, 1.4, 0.2]], dtype="<f4").tobytes()
    header = orjson.dumps({
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": len(row)}}],
        "parameters": {"binary_data_output": True, "skip_cache": True},
    })  # fmt: skip
    infer, infer_headers = get(
        f"/v2/models/{model}/infer",
        header + row,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    metadata = [("authorization", f"Bearer {key}")]
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        grpc_server = stub.ServerMetadata(service_pb2.ServerMetadataRequest(), metadata=metadata)
        grpc_metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=model), metadata=metadata)
        grpc_config = stub.ModelConfig(service_pb2.ModelConfigRequest(name=model), metadata=metadata)
        tensor = service_pb2.ModelInferRequest.InferInputTensor(name="X", datatype="FP32", shape=[1, 4])
        grpc_infer = stub.ModelInfer(
            service_pb2.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[row]),
            metadata=metadata,
        )
    recorded = {
        "http_server": get("/v2")[0],
        "http_metadata": get(f"/v2/models/{model}")[0],
        "http_config": get(f"/v2/models/{model}/config")[0],
        "http_infer": infer,
        "http_infer_header_length": infer_headers["Inference-Header-Content-Length"].encode(),
        "grpc_server": grpc_server.SerializeToString(),
        "grpc_metadata": grpc_metadata.SerializeToString(),
        "grpc_config": grpc_config.SerializeToString(),
        "grpc_infer": grpc_infer.SerializeToString(),
    }
    return {name: base64.b64encode(value).decode() for name, value in recorded.items()}


def wait_grpc(address: str, timeout: float = 90.0, *, health: bool = True) -> None:
    """Until the gRPC server on ``address`` says SERVING (``health``), or answers ServerLive
    (the canned server, which has no health service)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        checks = health_pb2_grpc.HealthStub(channel)
        inference = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if not health:
                    inference.ServerLive(service_pb2.ServerLiveRequest(), timeout=2)
                    return
                if (
                    checks.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            time.sleep(0.2)
    raise RuntimeError(f"the gRPC server on {address} was not serving within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="perf_analyzer's measurement window")
    parser.add_argument("--concurrency", type=int, default=8, help="for the alternated ratio rounds")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes per server")
    parser.add_argument("--threads", type=int, default=4, help="granian blocking threads per worker")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=500)
    parser.add_argument("--skip-tables", action="store_true", help="only the alternated ratio rounds")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also the transports alone: bench/canned_servers.py answering iris with ModelForge's recorded bytes",
    )
    args = parser.parse_args()
    if shutil.which("dpkg") is None:
        raise SystemExit("this script installs a Debian build of perf_analyzer")
    tool = perf_analyzer()

    from registry.demo import build_iris_onnx

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-triton-perf-"))
    env = server_env(workdir)
    source = workdir / "source"
    source.mkdir()
    (source / f"{MLP_NAME}-1.0.0.onnx").write_bytes(build_wide_mlp())
    (source / f"{IRIS_NAME}-1.0.0.onnx").write_bytes(build_iris_onnx())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict,manage").strip()

    http_port, grpc_port = free_port(), free_port()
    root = f"http://127.0.0.1:{http_port}"
    http_url, grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    server = dict(env, WEB_WORKERS=str(args.workers), WEB_THREADS=str(args.threads))
    grpc_command = [
        PYTHON, "manage.py", "serve_grpc", "--host", "127.0.0.1", "--port", str(grpc_port),
        "--workers", str(args.workers),
    ]  # fmt: skip
    with (
        running(serve_command(http_port, args.workers, args.threads), env=server, ready_url=f"{root}/api/v1/ready",
                log_name="triton-perf-http"),
        running(grpc_command, env=server, ready=lambda: wait_grpc(grpc_url), log_name="triton-perf-grpc"),
    ):  # fmt: skip
        mlp = api(f"{root}/api/v1/models/by-name/{MLP_NAME}/latest", key)
        batching = {"enabled": True, "max_batch_size": args.max_batch, "max_queue_delay_microseconds": args.delay_us}
        api(f"{root}/api/v1/models/{mlp['id']}", key, "PATCH", {"batching": batching})
        shapes = {model: shape_argument(root, key, model) for model in (IRIS_NAME, MLP_NAME)}
        doors = {"http": http_url, "grpc": grpc_url}

        def measure(model: str, protocol: str, concurrency: str, seconds: float) -> list[Row]:
            return run_perf_analyzer(
                tool,
                f"{model} {protocol}",
                model=model,
                protocol=protocol,
                url=doors[protocol],
                key=key,
                concurrency=concurrency,
                shape=shapes[model],
                seconds=seconds,
            )

        for model in (IRIS_NAME, MLP_NAME):  # warm-up: sessions loaded in every process
            for protocol in doors:
                measure(model, protocol, "8", 2.0)

        tables = []
        if not args.skip_tables:
            for model in (IRIS_NAME, MLP_NAME):
                for protocol in doors:
                    rows = measure(model, protocol, "1:8:1", args.seconds)
                    tables.extend(rows)
                    for row in rows:
                        print(row.line(), flush=True)

        rounds: dict[tuple[str, str], list[Row]] = {}
        concurrency = str(args.concurrency)
        for number in range(args.rounds):
            # A, B, B, A, ...: neither door always goes first.
            order = ("grpc", "http") if number % 2 == 0 else ("http", "grpc")
            for model in (IRIS_NAME, MLP_NAME):
                for protocol in order:
                    (row,) = measure(model, protocol, concurrency, args.seconds)
                    rounds.setdefault((model, protocol), []).append(row)
                    print(f"round {number + 1}: {row.line()}", flush=True)
        canned = record(root, grpc_url, key, IRIS_NAME) if args.floor else None

    floor: dict[str, list[Row]] = {}
    if canned is not None:
        canned_file = workdir / "canned.json"
        canned_file.write_text(orjson.dumps(canned).decode())
        canned_env = dict(os.environ, CANNED=str(canned_file))
        http_port, grpc_port = free_port(), free_port()
        doors = {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}
        wsgi = serve_command(http_port, args.workers, args.threads)
        wsgi[-1] = "bench.canned_servers:wsgi_app"
        canned_grpc = [PYTHON, "bench/canned_servers.py", str(grpc_port), "--threads", str(args.threads)]
        with (
            running(wsgi, env=canned_env, ready_url=f"http://{doors['http']}/v2/health/ready", log_name="canned-http"),
            running(canned_grpc, env=canned_env, ready=lambda: wait_grpc(doors["grpc"], health=False),
                    log_name="canned-grpc"),
        ):  # fmt: skip
            for number in range(args.rounds):
                order = ("grpc", "http") if number % 2 == 0 else ("http", "grpc")
                for protocol in order:
                    (row,) = measure(IRIS_NAME, protocol, concurrency, args.seconds)
                    floor.setdefault(protocol, []).append(row)
                    print(f"canned round {number + 1}: {row.line()}", flush=True)

    print(f"\nMachine: {machine()}; {args.workers} processes per server, granian {args.threads} threads per "
          f"worker; wide MLP batching max {args.max_batch} rows, delay {args.delay_us} us; perf_analyzer "
          f"{TRITONCLIENT.split('==')[1]}, binary tensors, windows of {args.seconds:g} s")  # fmt: skip
    if tables:
        print("\n| model, protocol | concurrency | infer/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
        for row in tables:
            print(row.line())
    print(f"\nAlternated rounds at concurrency {args.concurrency} (medians of {args.rounds}):")
    print("| model | gRPC infer/s | /v2 REST infer/s | gRPC / REST | gRPC p50 ms | REST p50 ms "
          "| rounds gRPC | rounds REST |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for model in (IRIS_NAME, MLP_NAME):
        grpc_rows, http_rows = rounds[model, "grpc"], rounds[model, "http"]
        grpc_median = statistics.median(row.throughput for row in grpc_rows)
        http_median = statistics.median(row.throughput for row in http_rows)
        print(
            f"| {model} | {grpc_median:,.0f} | {http_median:,.0f} | {grpc_median / http_median:.2f}x (target >= 1.0) "
            f"| {statistics.median(row.p50_ms for row in grpc_rows):.2f} "
            f"| {statistics.median(row.p50_ms for row in http_rows):.2f} "
            f"| {', '.join(f'{row.throughput:,.0f}' for row in grpc_rows)} "
            f"| {', '.join(f'{row.throughput:,.0f}' for row in http_rows)} |"
        )
    if floor:
        grpc_median = statistics.median(row.throughput for row in floor["grpc"])
        http_median = statistics.median(row.throughput for row in floor["http"])
        print(
            f"\nThe transports alone (bench/canned_servers.py, 1 process each for gRPC, {args.workers} granian "
            f"worker(s)), iris's recorded bytes: gRPC {grpc_median:,.0f} infer/s ({1e6 / grpc_median:,.0f} us per "
            f"call), HTTP {http_median:,.0f} infer/s ({1e6 / http_median:,.0f} us per call): gRPC / HTTP "
            f"{grpc_median / http_median:.2f}x; rounds gRPC {', '.join(f'{r.throughput:,.0f}' for r in floor['grpc'])}"
            f", HTTP {', '.join(f'{r.throughput:,.0f}' for r in floor['http'])}"
        )


if __name__ == "__main__":
    main()
