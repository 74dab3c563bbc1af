"""`modelforge_workers` on GET /metrics: the Celery workers whose heartbeat reached the broker
lately (jobs.monitoring, recorded by modelforge_site.celery). Real workers and broker, as in
test_celery_worker.py; the scrape is the real view's."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from jobs.monitoring import HEARTBEATS
from tests.inference.test_metrics import scrape
from tests.jobs.conftest import BROKER_URL, NO_BROKER, CeleryStack, point_celery_at

pytestmark = [
    pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER),
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
]


def workers_alive(client) -> float | None:
    return scrape(client).get(("modelforge_workers", ()))


def wait_workers(client, expected: int, timeout: float = 60.0) -> None:
    """Until the scrape reports ``expected`` workers alive (a killed one ages out in 10 s)."""
    deadline = time.monotonic() + timeout
    while (found := workers_alive(client)) != expected:
        assert time.monotonic() < deadline, f"modelforge_workers is {found}, not {expected}"
        time.sleep(0.2)


def test_workers_are_counted_while_their_heartbeats_arrive(celery_stack, read_client, settings):
    stack = CeleryStack(celery_stack.root / "heartbeats")  # its own namespace: only its workers count
    stack.configure(settings)
    try:
        assert workers_alive(read_client) == 0
        stopped = stack.start_worker(f"beats-a-{os.getpid()}", heartbeat=True)
        killed = stack.start_worker(f"beats-b-{os.getpid()}", heartbeat=True)
        wait_workers(read_client, 2)
        # Under the transport's key prefix, as the queues are: deployments sharing a Redis never
        # count each other's workers.
        assert redis.Redis.from_url(BROKER_URL).zcard(f"{stack.prefix}{HEARTBEATS}") == 2

        os.kill(stopped.process.pid, signal.SIGTERM)  # a warm shutdown forgets the worker at once
        stopped.process.wait(timeout=60)
        assert workers_alive(read_client) == 1
        os.killpg(killed.process.pid, signal.SIGKILL)  # a lost worker stops beating
        killed.process.wait(timeout=10)
        wait_workers(read_client, 0)
    finally:
        stack.stop()
        point_celery_at(BROKER_URL, celery_stack.prefix, settings)
