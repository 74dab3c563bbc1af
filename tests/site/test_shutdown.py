"""Readiness answers 503 once the process is stopping (core.shutdown); liveness
and the API go on. The signal path itself is driven by tests/e2e/test_shutdown.py (granian);
here the chaining of a handler that was in place before (gunicorn's, runserver's default)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from django.conf import settings

from core import shutdown

pytestmark = pytest.mark.django_db


@pytest.fixture
def stopping():
    shutdown.begin("test")
    yield
    shutdown.stopping.clear()


def test_ready_is_200_until_shutdown_begins(api_client):
    assert api_client.get("/api/v1/ready").status_code == 200
    assert api_client.get("/v2/health/ready").status_code == 200


def test_ready_is_503_once_shutdown_began(api_client, stopping):
    response = api_client.get("/api/v1/ready")
    assert (response.status_code, response.json()["status"]) == (503, "shutting down")
    v2 = api_client.get("/v2/health/ready")
    assert (v2.status_code, v2.json()["code"]) == (503, "shutting_down")
    assert api_client.get("/api/v1/live").status_code == 200
    assert api_client.get("/v2/health/live").status_code == 200


CHILD = """
import os, signal, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
import django; django.setup()
from core import shutdown
seen = []
if sys.argv[1] == "chained":
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
shutdown.install()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print(shutdown.stopping.is_set(), seen == [signal.SIGTERM])
"""


def test_the_handler_in_place_still_runs_after_ours():
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "chained"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_the_default_action_still_ends_the_process():
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "default"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM
    assert done.stdout == ""
