"""Where a connection reset with no fault comes from: two small experiments on the production
server (granian as `make serve` starts it), on loopback, in about a minute.

1. The keep-alive race. granian closes a keep-alive connection that has sat idle for
   `--http1-header-read-timeout` (30 s by default: it is hyper's timer for the next request's
   headers). A client that sends on the connection just as the server closes it gets a reset
   or an empty answer, with nothing wrong on either side. The experiment shortens the timeout to
   TIMEOUT_MS and has clients idle for times around it, then send: below the timeout every
   request is answered; well above it the client sees the close (RemoteDisconnected; a careful
   client checks the socket before reuse and never sends); around it, requests fail in a way
   the client cannot see coming.
2. Bodies left unread. A response the application gives without reading the request body (a
   405, a refused key, a throttled request) makes granian close the connection after the
   response, without `Connection: close`: the client keeps the connection, and its next
   request on it fails.

    .venv/bin/python bench/keepalive_race.py [--trials 400] [--port 8620]
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import manage, running, serve_command, server_env  # noqa: E402

TIMEOUT_MS = 1000  # granian's minimum is 1 ms; a second keeps the experiment short
SPREAD_MS = 40  # clients idle TIMEOUT_MS +- this before their second request


def second_request_after(port: int, idle_s: float) -> str:
    """A request, `idle_s` seconds of idleness, a second request on the same connection: how
    the second one ended."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/api/v1/live")
        connection.getresponse().read()
        time.sleep(idle_s)
        connection.request("GET", "/api/v1/live")
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def idle_race(port: int, trials: int, clients: int = 8) -> dict[str, Counter]:
    """{idle band: Counter(outcome)} over `trials` idle times spread around the timeout."""
    bands: dict[str, Counter] = defaultdict(Counter)
    lock = threading.Lock()
    rng = random.Random(0)
    idles = [(TIMEOUT_MS + rng.uniform(-SPREAD_MS, SPREAD_MS)) / 1000 for _ in range(trials)]

    def band(idle_ms: float) -> str:
        offset = idle_ms - TIMEOUT_MS
        if offset < -SPREAD_MS / 2:
            return f"idle < timeout - {SPREAD_MS // 2} ms"
        if offset > SPREAD_MS / 2:
            return f"idle > timeout + {SPREAD_MS // 2} ms"
        return f"idle = timeout +- {SPREAD_MS // 2} ms"

    def client(share: list[float]) -> None:
        for idle in share:
            outcome = second_request_after(port, idle)
            with lock:
                bands[band(idle * 1000)][outcome] += 1

    threads = [threading.Thread(target=client, args=(idles[index::clients],)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return dict(sorted(bands.items()))


def unread_body(port: int, path: str, size: int, rounds: int = 20) -> Counter:
    """POST `size` bytes to `path` `rounds` times on one kept connection (a new one after a
    failure): the outcomes, and whether the server said `Connection: close`."""
    outcomes: Counter = Counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(rounds):
        try:
            connection.request("POST", path, b"x" * size, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            close = (response.getheader("Connection") or "").lower() == "close"
            outcomes[f"{response.status}{' (Connection: close)' if close else ''}"] += 1
        except (OSError, http.client.HTTPException) as exc:
            outcomes[type(exc).__name__] += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.close()
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--port", type=int, default=8620)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelforge-keepalive-"))
    env = server_env(workdir)
    env.update(REDIS_URL="", CELERY_BROKER_URL="")
    manage(env, "migrate", "--noinput", "-v0")
    command = serve_command(args.port, 1, 4)
    command[-1:-1] = ["--http1-header-read-timeout", str(TIMEOUT_MS)]
    with running(command, env=env, ready_url=f"http://127.0.0.1:{args.port}/api/v1/ready", log_name="keepalive"):
        print(f"1. keep-alive race: idle {TIMEOUT_MS} +- {SPREAD_MS} ms against a {TIMEOUT_MS} ms server timeout")
        for band, outcomes in idle_race(args.port, args.trials).items():
            print(f"   {band}: {dict(outcomes)}")
        print("2. a response that leaves the request body unread (20 requests on one kept connection)")
        for size, label in ((100, "100 B"), (100_000, "100 kB")):
            outcomes = unread_body(args.port, "/api/v1/live", size)
            print(f"   POST /api/v1/live (405, body unread), {label}: {dict(outcomes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
