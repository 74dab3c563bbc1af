"""Benchmark: what a rollout and a shadow cost the clients of an alias.

One production server (granian, `--workers`, default 1) serves iris as `iris@production`
(1.0.0; 1.1.0 is the same file, so both sides cost the same and only the routing differs).
wrk drives `POST /api/v1/models/by-name/iris/predict` (the alias by default) in three
configurations, switched through the rollout API between rounds, alternated A, B, A, C, ...
for --rounds rounds:

- plain: the alias without a rollout;
- rollout: candidate 1.1.0 at 50 % (wrk sends one API key, so every request is routed by its
  hash to one side: the routing itself is what is measured);
- shadow: 1.1.0 as a shadow of 100 % of the requests (copies run after the answer, on the
  server's shadow thread; a full queue drops copies, counted).

Prints each round's req/s and p50, the medians, and the ratios against plain (targets: rollout
req/s >= 0.95 x plain; shadow p50 <= 1.10 x plain), with the shadow's copies compared and
dropped (where the rest of the CPU went).

    .venv/bin/python bench/rollout.py [--rounds 3] [--seconds 10] [--connections 8] [--workers 1]

Uses DATABASE_URL / REDIS_URL when set (a fresh database next to it), else SQLite and the
local-memory cache. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, free_port, machine, manage, running, serve_command, server_env, wrk  # noqa: E402

ROW = [[5.1, 3.5, 1.4, 0.2]]
NAME = "iris"
CONFIGURATIONS = {
    "plain": None,
    "rollout": {"candidate_version": "1.1.0", "weight": 50},
    "shadow": {"shadow_version": "1.1.0", "shadow_percent": 100},
}


def api(base: str, key: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as refused:
        if refused.code == 404 and method == "DELETE":
            return {}
        raise SystemExit(f"{method} {path} answered {refused.code}: {refused.read()[:500]!r}") from None


def configure(base: str, key: str, label: str, cache_seconds: float) -> None:
    """Set the alias's rollout for `label` and wait until every worker's cache has it."""
    path = f"/api/v1/models/by-name/{NAME}/aliases/production/rollout"
    api(base, key, "DELETE", path)
    body = CONFIGURATIONS[label]
    if body is not None:
        api(base, key, "PUT", path, body)
    time.sleep(cache_seconds + 0.5)  # without Redis, other workers see the change at their cache's TTL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from registry.demo import build_iris_onnx

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-rollout-"))
    env = server_env(workdir)
    env["SERVING_CACHE_SECONDS"] = env.get("SERVING_CACHE_SECONDS", "1")
    env["SERVING_STATS_FLUSH_SECONDS"] = "1"  # the shadow's counts are read after each shadow round
    cache_seconds = float(env["SERVING_CACHE_SECONDS"])
    source = workdir / "source"
    for version in ("1.0.0", "1.1.0"):
        folder = source / NAME / version
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(build_iris_onnx())
    manage(env, "migrate", "--noinput")
    manage(env, "import_models", str(source))
    key = manage(env, "create_api_key", "--name", "bench", "--scopes", "read,predict,manage").strip()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/api/v1/models/by-name/{NAME}/predict"
    body = json.dumps({"input_data": {"X": ROW}}).encode()
    print(f"# rollout benchmark: {machine()}; {args.workers} worker(s), {args.connections} connections, "
          f"{args.seconds} s per run, {args.rounds} rounds")  # fmt: skip
    results: dict[str, list] = {label: [] for label in CONFIGURATIONS}
    shadow_report = None
    with running(
        serve_command(port, args.workers, args.threads), env=env, log_name="rollout", ready_url=f"{base}/api/v1/live"
    ):
        api(base, key, "PUT", f"/api/v1/models/by-name/{NAME}/aliases/production", {"version": "1.0.0"})
        wrk("warm-up", url, body, connections=args.connections, seconds=2, headers={"Authorization": f"Bearer {key}"})
        for number in range(args.rounds):
            for label in (
                ("plain", "rollout", "plain", "shadow") if number % 2 == 0 else ("plain", "shadow", "plain", "rollout")
            ):
                configure(base, key, label, cache_seconds)
                result = wrk(
                    label, url, body, connections=args.connections, seconds=args.seconds,
                    headers={"Authorization": f"Bearer {key}"},
                )  # fmt: skip
                results[label].append(result)
                print(result.row(), f"round {number + 1}", flush=True)
                if label == "shadow":
                    time.sleep(2.5)  # the copies still queued run, and the counts are written
                    shadow_report = api(
                        base, key, "GET", f"/api/v1/models/by-name/{NAME}/aliases/production/rollout?minutes=60"
                    )["shadow"]

    median = {
        label: (statistics.median(r.requests_per_second for r in rows), statistics.median(r.p50_ms for r in rows))
        for label, rows in results.items()
    }
    print("\n| configuration | median req/s | median p50 ms |")
    print("|---|---|---|")
    for label, (rps, p50) in median.items():
        print(f"| {label} | {rps:,.0f} | {p50:.3f} |")
    plain_rps, plain_p50 = median["plain"]
    print(f"\nrollout 50 % req/s / plain: {median['rollout'][0] / plain_rps:.3f} (target >= 0.95)")
    print(f"shadow 100 % p50 / plain: {median['shadow'][1] / plain_p50:.3f} (target <= 1.10)")
    if shadow_report:
        print(
            f"shadow copies (last hour, every shadow round): {shadow_report['copies']:,} taken, "
            f"{shadow_report['compared']:,} run and compared (agreement {shadow_report['agreement']}), "
            f"{shadow_report['dropped']:,} dropped (no idle moment in time, or the queue full), "
            f"{shadow_report['errors']:,} failed"
        )


if __name__ == "__main__":
    main()
