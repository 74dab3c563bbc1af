"""Benchmark: two checkouts of ModelForge side by side (an old commit against the new one).

Each checkout gets its own fresh PostgreSQL database (from DATABASE_URL; SQLite without it), the
iris demo model through import_models and a key, and runs the production server command
(`make serve`: granian, WSGI) on its own port. Both servers stay up; wrk drives one at a time,
alternating A, B, B, A, ... over the rounds so that drift in the machine's speed falls on both,
and the medians are compared:

- iris JSON predict by name, skip_cache (the /api/v1 fast path, the model runs every time);
- iris /v2 binary infer, skip_cache (the /v2 fast path, binary FP32 in and out).

    git worktree add --detach /tmp/old <commit>
    .venv/bin/python bench/ab_commits.py --old /tmp/old --new . [--rounds 3 --seconds 10]

The old checkout runs with this checkout's virtual environment: only commits whose requirements
it satisfies can be compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batching import binary_request  # noqa: E402
from bench.harness import (  # noqa: E402
    PYTHON,
    free_port,
    fresh_database,
    machine,
    running,
    serve_command,
    server_env,
    wrk,
)

ROW = [[5.1, 3.5, 1.4, 0.2]]


@contextlib.contextmanager
def mock_environ_without(name: str):
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


def manage(root: Path, env: dict, *args: str) -> str:
    done = subprocess.run([PYTHON, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{root}: manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare(root: Path, label: str, workdir: Path) -> tuple[dict, str]:
    """The server environment of one checkout, its database migrated, iris imported, a key."""
    (workdir / "models").mkdir(parents=True)
    source = workdir / "source"
    source.mkdir()
    database = fresh_database(os.environ.get("DATABASE_URL"), workdir, label=f"ab_{label}")
    with mock_environ_without("DATABASE_URL"):
        env = server_env(workdir)  # the production settings of the bench, on a SQLite file here...
    env["DATABASE_URL"] = database  # ...replaced by this checkout's own database
    env["CACHE_KEY_PREFIX"] = f"ab-{label}-{os.getpid()}"
    env["PYTHONPATH"] = str(root)
    build = "from registry.demo import build_iris_onnx; import sys; sys.stdout.buffer.write(build_iris_onnx())"
    model = subprocess.run([PYTHON, "-c", build], cwd=root, env=env, capture_output=True, check=True).stdout
    (source / "iris-classifier-1.0.0.onnx").write_bytes(model)
    manage(root, env, "migrate", "--noinput")
    manage(root, env, "import_models", str(source))
    printed = manage(root, env, "create_api_key", "--name", "bench", "--scopes", "read,predict")
    key = re.search(r"[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}", printed).group(0)
    return env, key


@contextlib.contextmanager
def server(root: Path, env: dict, workers: int, threads: int, label: str):
    """The production server of one checkout, run from its folder (granian imports from there)."""
    port = free_port()
    ready = f"http://127.0.0.1:{port}/api/v1/live"
    with running(serve_command(port, workers, threads), env=env, ready_url=ready, log_name=label, cwd=root):
        yield f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    print(f"machine: {machine()}; {args.workers} workers x {args.threads} threads, {args.connections} connections")
    json_body = json.dumps({"input_data": {"X": ROW}, "skip_cache": True}).encode()
    v2_body, v2_headers = binary_request("X", np.asarray(ROW, dtype=np.float32), None)
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        bases = {}
        keys = {}
        for label, root in (("old", args.old.resolve()), ("new", args.new.resolve())):
            env, keys[label] = prepare(root, label, Path(tmp) / label)
            bases[label] = stack.enter_context(server(root, env, args.workers, args.threads, f"ab-{label}"))
        for index in range(args.rounds):
            order = ("old", "new") if index % 2 == 0 else ("new", "old")
            for label in order:
                auth = {"Authorization": f"Bearer {keys[label]}"}
                for case, url, body, headers in (
                    ("iris JSON", f"{bases[label]}/api/v1/models/by-name/iris-classifier/predict", json_body, auth),
                    ("iris v2 binary", f"{bases[label]}/v2/models/iris-classifier/infer", v2_body, auth | v2_headers),
                ):
                    result = wrk(case, url, body, connections=args.connections, seconds=args.seconds, headers=headers)
                    if result.errors:
                        raise SystemExit(f"{label} {case}: {result.errors} errors")
                    results.setdefault((case, label), []).append(result.requests_per_second)
                    print(f"round {index + 1} {label:3} {case:15} {result.requests_per_second:8,.0f} req/s", flush=True)
    print("\n| case | old req/s (median) | new req/s (median) | new / old | rounds old | rounds new |")
    print("|---|---|---|---|---|---|")
    for case in ("iris JSON", "iris v2 binary"):
        old, new = results[(case, "old")], results[(case, "new")]
        ratio = statistics.median(new) / statistics.median(old)
        rounds_old = ", ".join(f"{value:,.0f}" for value in old)
        rounds_new = ", ".join(f"{value:,.0f}" for value in new)
        line = f"| {case} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | {ratio:.2f}x"
        print(f"{line} | {rounds_old} | {rounds_new} |")


if __name__ == "__main__":
    main()
