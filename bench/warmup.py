"""Benchmark: the first request after a model answers ready, with and without warm-up.

Each round starts the production server (granian, one worker, so the readiness call and the
requests meet the same process), sets the wide MLP's warm-up (a count of runs on zero inputs, or
none), asks `/v2/models/{name}/ready` until it answers 200 (the session is loaded, and warmed
up when set), then times the first /v2 binary infer and --requests more one after another. The
two configurations alternate (A, B, B, A, ...); the ratio first / steady median is the
target's (at most 2 with warm-up).

    .venv/bin/python bench/warmup.py [--rounds 3] [--count 10] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batching import MLP_NAME, api, binary_request, build_wide_mlp  # noqa: E402
from bench.harness import free_port, machine, manage, running, serve_command, server_env  # noqa: E402


def post(url: str, body: bytes, headers: dict) -> float:
    """Seconds for one request, answered 200."""
    headers = {**{name: value for name, value in headers.items() if value}, "Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 (loopback)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as refused:
        raise SystemExit(f"{url} answered {refused.code}: {refused.read()[:500]!r}") from None
    return time.perf_counter() - started


def wait_ready(url: str, key: str) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    while True:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                if response.status == 200:
                    return
        except urllib.error.HTTPError as refused:
            if refused.code != 503:
                raise
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=10, help="warm-up runs")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-warmup-"))
    env = server_env(workdir)
    source = workdir / "source"
    source.mkdir()
    (source / f"{MLP_NAME}-1.0.0.onnx").write_bytes(build_wide_mlp())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict,manage").strip()
    rng = np.random.default_rng(3)
    rows = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(args.requests + 1)]

    results: dict[str, list[tuple[float, float]]] = {"warm-up": [], "none": []}
    for number in range(args.rounds):
        order = ("warm-up", "none") if number % 2 == 0 else ("none", "warm-up")
        for label in order:
            port = free_port()
            root = f"http://127.0.0.1:{port}"
            with running(serve_command(port, 1, 4), env=env, ready_url=f"{root}/api/v1/ready", log_name="warmup"):
                mlp = api(f"{root}/api/v1/models/by-name/{MLP_NAME}/latest", key)
                count = args.count if label == "warm-up" else 0
                api(f"{root}/api/v1/models/{mlp['id']}", key, "PATCH", {"warmup": {"count": count, "data": "zero"}})
                wait_ready(f"{root}/v2/models/{MLP_NAME}/ready", key)
                timings = []
                for row in rows:  # fresh inputs: none is answered from the cache
                    body, headers = binary_request("X", row, "probabilities")
                    timings.append(post(f"{root}/v2/models/{MLP_NAME}/infer", body, {**headers, **auth(key)}))
                paused = []  # the same server, long warm, after a second of idleness
                for row in rows[:5]:
                    time.sleep(1)
                    body, headers = binary_request("X", row + 1, "probabilities")
                    paused.append(post(f"{root}/v2/models/{MLP_NAME}/infer", body, {**headers, **auth(key)}))
            first, steady, pause = timings[0], statistics.median(timings[1:]), statistics.median(paused)
            results[label].append((first, steady))
            print(f"round {number + 1}, {label}: first {first * 1000:.2f} ms, steady median {steady * 1000:.2f} ms, "
                  f"first / steady {first / steady:.2f}; after 1 s idle {pause * 1000:.2f} ms "
                  f"({pause / steady:.2f}x steady)", flush=True)  # fmt: skip

    print(f"\nMachine: {machine()}; wide MLP, one granian worker; warm-up {args.count} runs on zero inputs")
    print("| configuration | first ms (median) | steady median ms | first / steady (median) | rounds |")
    print("|---|---|---|---|---|")
    for label, rounds in results.items():
        ratios = [first / steady for first, steady in rounds]
        target = " (target <= 2)" if label == "warm-up" else ""
        print(f"| {label} | {statistics.median(f for f, _ in rounds) * 1000:.2f} | "
              f"{statistics.median(s for _, s in rounds) * 1000:.2f} | {statistics.median(ratios):.2f}{target} "
              f"| {', '.join(f'{r:.2f}' for r in ratios)} |")  # fmt: skip


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


if __name__ == "__main__":
    main()
