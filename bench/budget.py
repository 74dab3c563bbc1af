"""Benchmark: how much per-request interpreter work dynamic batching can carry on this machine.

The batching targets of issue 5 are ratios between two runs of the same server, and each request
costs the model's time plus everything else (the load generator, the kernel, the HTTP server and
the server's own Python). This runs bench/lean_server.py, the leanest batching server, with
WORK_US microseconds of busy interpreter work added to every request (holding the GIL, as real
checks and counts do), batching on and off, and prints the ratios for each amount of work: the
largest amount that still meets a target is the per-request budget a full-featured server has.

Configurations: one RSGI process (one asyncio loop, the model in a thread: the best batching
server measured) and granian WSGI with ModelForge's workers and threads. Baselines: the minimal
FastAPI + onnxruntime JSON endpoint with as many processes.

    .venv/bin/python bench/budget.py [--seconds 10] [--work-us 0,25,50,100,150]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batching import binary_request, build_wide_mlp, lean_bound, minimal_fastapi, raw_per_row_us  # noqa: E402
from bench.harness import machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="WSGI worker processes")
    parser.add_argument("--threads", type=int, default=8, help="blocking threads per WSGI worker")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--work-us", default="0,25,50,100,150", help="comma-separated microseconds per request")
    args = parser.parse_args()
    levels = [int(level) for level in args.work_us.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-budget-"))
    mlp_path = workdir / "wide-mlp.onnx"
    mlp_path.write_bytes(build_wide_mlp())
    rng = np.random.default_rng(1)
    per_row = raw_per_row_us(mlp_path, rng)
    row = rng.standard_normal((1, 256)).astype(np.float32)
    body, headers = binary_request("X", row, "probabilities")
    mlp_json = json.dumps({"input_data": {"X": row.tolist()}}).encode()

    setups = [("rsgi", 1), ("wsgi", args.workers)]
    fastapi = {}
    for workers in sorted({workers for _interface, workers in setups}):
        fastapi[workers] = minimal_fastapi(mlp_path, mlp_json, workers=workers, connections=args.connections,
                                           seconds=args.seconds)  # fmt: skip
        print(fastapi[workers].row(), flush=True)

    lines = []
    for interface, workers in setups:
        for work_us in levels:
            on, off = (
                lean_bound(mlp_path, body, headers, workers, batch, args, interface, work_us) for batch in (True, False)
            )
            print(on.row(), off.row(), sep="\n", flush=True)
            on_rps, off_rps = on.requests_per_second, off.requests_per_second
            lines.append(
                f"| {interface.upper()} | {workers} | {work_us} | {on_rps:,.0f} | {off_rps:,.0f} | "
                f"{on_rps / off_rps:.2f}x | {on_rps / fastapi[workers].requests_per_second:.2f}x | "
                f"{on.p99_ms / off.p99_ms:.2f} |"
            )

    print(f"\nMachine: {machine()}; {args.connections} connections; raw onnxruntime {per_row[1]:.0f} us per row "
          f"alone, {per_row[16]:.0f} us in a batch of 16; WSGI {args.threads} threads per worker")  # fmt: skip
    baselines = (f"minimal FastAPI, {w} process(es): {r.requests_per_second:,.0f} req/s" for w, r in fastapi.items())
    print(", ".join(baselines))
    print("| server | processes | work per request (us) | batching on req/s | off req/s | on / off (target >= 2.5) "
          "| on / FastAPI (target >= 3) | p99 on / off |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
