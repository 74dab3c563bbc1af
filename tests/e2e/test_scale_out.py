"""Two API nodes and two Celery workers on one machine, sharing PostgreSQL, Redis and an
S3-compatible bucket (moto's server mode), as two machines would.

Each node is a production server process (granian, DEBUG off) on its own port with its own
model cache; each worker has its own name. What one node does, the other sees: a model
uploaded through A is served by B (fetched from the bucket, verified), an archive or re-upload
on A is refused or served anew by B within about a second (through the Redis invalidation
channel: the nodes' own cache lifetimes are set to a minute, so only that can explain it),
jobs created on either node spread over both workers, and each node writes its buffered
history when stopped.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from inference.models import Prediction
from jobs.models import Job
from tests import granian_server
from tests.inference.factories import make_scaled_model
from tests.jobs.conftest import BROKER_URL, CeleryWorker, database_url
from tests.registry.polling import wait_validated
from tests.s3_server import MotoServer, s3_environment

PORTS = range(8400, 8500)
# How long another node may take to see a change; the issue asks for "within a second".
PROPAGATION_BOUND_SECONDS = 1.0

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),  # the nodes and workers must see the test's rows
    pytest.mark.skipif(
        not (BROKER_URL and os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("postgres")),
        reason="needs PostgreSQL (DATABASE_URL), Redis (REDIS_URL) and a broker (CELERY_BROKER_URL), as CI has",
    ),
]


class Node:
    """A granian server process of ours, answering on 127.0.0.1:port."""

    def __init__(self, name: str, env: dict[str, str], log: Path):
        self.name = name
        self.port = granian_server.free_port(within=PORTS)
        self.log = log
        self.process = granian_server.start(env, log, port=self.port, ready_path="/api/v1/ready")

    def request(self, method: str, path: str, *, key: str = "", body: bytes | None = None, content_type: str = ""):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our loopback server)
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def post_json(self, path: str, key: str, payload: dict):
        return self.request("POST", path, key=key, body=json.dumps(payload).encode(), content_type="application/json")

    def upload(self, path: str, key: str, fields: dict[str, str], data: bytes):
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="model.onnx"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, key=key, body=body, content_type=f"multipart/form-data; boundary={boundary}")

    def log_tail(self, lines: int = 40) -> str:
        return granian_server.log_tail(self.log, lines)

    def stop(self) -> int:
        """SIGTERM (a graceful stop: in-flight requests finish, history is written)."""
        return granian_server.stop(self.process, timeout=30)


@pytest.fixture
def cluster(tmp_path, make_key):
    """Moto, two nodes and two workers, torn down in reverse; yields (a, b, workers, keys)."""
    moto = MotoServer(tmp_path / "moto.log").start()
    bucket = moto.new_bucket()
    run = uuid.uuid4().hex[:8]
    shared = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "scale-out-test-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url(),
        "CACHE_KEY_PREFIX": f"scale-{run}",
        "CELERY_BROKER_KEY_PREFIX": f"scale-{run}:",
        "JOB_STORAGE_PATH": str(tmp_path / "jobs"),  # job files: a volume shared by every node
        "STATIC_ROOT": str(tmp_path / "static"),
        "SERVING_CACHE_SECONDS": "60",
        "API_KEY_CACHE_SECONDS": "60",
        "SESSION_RECHECK_SECONDS": "60",
        "HISTORY_FLUSH_INTERVAL_SECONDS": "600",  # only the shutdown writes history
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    started: list = []

    def env_for(name: str) -> dict[str, str]:
        return {**shared, **s3_environment(moto, bucket, tmp_path / f"cache-{name}")}

    try:
        a = Node("a", env_for("a"), tmp_path / "node-a.log")
        started.append(a)
        b = Node("b", env_for("b"), tmp_path / "node-b.log")
        started.append(b)
        workers = []
        for name in ("w1", "w2"):
            worker = CeleryWorker(f"{name}-{run}", env_for(name), tmp_path / f"{name}.log")
            started.append(worker)
            workers.append(worker)
        keys = {scope: make_key("read", scope, name=f"scale-{scope}")[1] for scope in ("predict", "manage")}
        yield a, b, workers, keys
    finally:
        for process in reversed(started):
            process.stop()
        moto.stop()
        import redis

        client = redis.Redis.from_url(BROKER_URL)
        leftovers = list(client.scan_iter(match=f"scale-{run}:*", count=1000))
        if leftovers:
            client.delete(*leftovers)


def poll(check, *, bound: float, what: str):
    """Call check() until it returns something truthy, for at most `bound` seconds."""
    deadline = time.monotonic() + bound
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not seen within {bound}s"
        time.sleep(0.02)


X = {"X": [[1.0, 2.0, 3.0]]}


def validated_on(node, model_id: str, key: str) -> dict:
    """The model once its background validation (on the Celery workers) has ended."""
    return wait_validated(lambda: node.request("GET", f"/api/v1/models/{model_id}", key=key)[1])


def test_two_nodes_and_two_workers_share_models_changes_and_jobs(cluster):
    a, b, workers, keys = cluster
    predict_key, manage_key = keys["predict"], keys["manage"]
    served = 0

    def predict_on(node, model_id):
        nonlocal served
        status, body = node.post_json(f"/api/v1/models/{model_id}/predict", predict_key, {"input_data": X})
        served += status == 200
        return status, body

    # Uploaded through A, served by B (which has never seen the file: it comes from the bucket).
    status, model = a.upload(
        "/api/v1/models", manage_key, {"name": "scaler", "version": "1.0.0"}, make_scaled_model(2.0)
    )
    assert status == 202, model
    model = validated_on(a, model["id"], manage_key)
    assert model["status"] == "ready", model
    status, body = predict_on(b, model["id"])
    assert status == 200, (body, b.log_tail())
    assert body["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    assert predict_on(a, model["id"])[1]["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}

    # A ready version keeps its file; a new file is a new version, uploaded on A and served by B.
    status, refused = a.upload(f"/api/v1/models/{model['id']}/upload", manage_key, {}, make_scaled_model(3.0))
    assert (status, refused["code"]) == (409, "version_immutable")
    status, second = a.upload(
        "/api/v1/models", manage_key, {"name": "scaler", "version": "1.1.0"}, make_scaled_model(3.0)
    )
    assert status == 202, second
    assert validated_on(a, second["id"], manage_key)["status"] == "ready"
    poll(
        lambda: predict_on(b, second["id"])[1].get("output_data") == {"Y": [[3.0, 6.0, 9.0]]},
        bound=PROPAGATION_BOUND_SECONDS,
        what="the new version on B",
    )
    assert predict_on(b, model["id"])[1]["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}

    # Archived on A: B refuses it.
    status, _ = a.request("POST", f"/api/v1/models/{model['id']}/archive", key=manage_key)
    assert status == 200
    refused = poll(
        lambda: (answer := predict_on(b, model["id"]))[0] == 409 and answer[1],
        bound=PROPAGATION_BOUND_SECONDS,
        what="the archive on B",
    )
    assert refused["code"] == "model_archived"

    # Jobs created on both nodes run on both workers.
    status, iris = a.upload(
        "/api/v1/models", manage_key, {"name": "jobs-scaler", "version": "1.0.0"}, make_scaled_model(5.0)
    )
    assert status == 202, iris
    iris = validated_on(a, iris["id"], manage_key)
    assert iris["status"] == "ready", iris
    job_ids = []
    for index in range(12):
        node = (a, b)[index % 2]
        status, job = node.post_json("/api/v1/jobs", predict_key, {"model_id": iris["id"], "input_data": X})
        assert status == 202, job
        job_ids.append(job["id"])

    def all_finished():
        jobs = list(Job.objects.filter(pk__in=job_ids))
        return jobs if all(job.status == Job.Status.COMPLETED for job in jobs) else None

    finished = poll(all_finished, bound=120, what="every job completed")
    assert {job.worker for job in finished} == {worker.name for worker in workers}
    status, result = b.request("GET", f"/api/v1/jobs/{job_ids[0]}/result", key=predict_key)
    assert (status, result["output_data"]) == (200, {"Y": [[5.0, 10.0, 15.0]]})

    # Each node writes its buffered history when stopped (nothing was written before).
    assert Prediction.objects.count() == 0
    assert (a.stop(), b.stop()) == (0, 0)
    assert Prediction.objects.count() == served
