"""Two API nodes, two Celery workers and beat on one machine, sharing PostgreSQL, Redis and an
S3-compatible bucket (moto's server mode), as separate machines would: every process has its
own directories (model cache, job scratch, upload temporaries), so nothing passes between
them but through the bucket, the database and Redis.

Each node is a production server process (granian, DEBUG off) on its own port with its own
model cache; each worker has its own name. What one node does, the other sees: a model
uploaded through A is served by B (fetched from the bucket, verified), an archive or re-upload
on A is refused or served anew by B within about a second (through the Redis invalidation
channel: the nodes' own cache lifetimes are set to a minute, so only that can explain it),
jobs created on either node spread over both workers, and each node writes its buffered
history when stopped. The second test is issue 22's bar: batch jobs with their files in the
bucket, DELETE, a node with the wrong prefix, a storage outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from inference.models import Prediction
from jobs.models import Job
from registry.models import MLModel
from tests import granian_server
from tests.e2e.nodes import Node, poll
from tests.inference.factories import make_scaled_model
from tests.jobs.conftest import BROKER_URL, CeleryWorker, database_url
from tests.registry.polling import wait_validated
from tests.s3_server import MotoServer, s3_environment

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


class Beat:
    """`celery beat` (one per deployment), with its schedule file in its own directory."""

    def __init__(self, env: dict[str, str], home: Path):
        self.log_path = home / "beat.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "modelforge_site", "beat", "--loglevel", "INFO",
             "--schedule", str(home / "celerybeat-schedule")],
            cwd=granian_server.BASE_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


class Cluster:
    """Moto, two nodes, two workers and beat; every process has its own directories (model
    cache, job scratch, upload temporaries), so nothing reaches another but through the bucket,
    PostgreSQL and Redis."""

    def __init__(self, tmp_path: Path, moto: MotoServer, bucket: str):
        self.tmp_path, self.moto, self.bucket = tmp_path, moto, bucket
        self.run = uuid.uuid4().hex[:8]
        self.started: list = []
        self.homes: list[Path] = []
        self.shared = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
            "DEBUG": "false",
            "SECRET_KEY": "scale-out-test-only-" + "x" * 40,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url(),
            "CACHE_KEY_PREFIX": f"scale-{self.run}",
            "CELERY_BROKER_KEY_PREFIX": f"scale-{self.run}:",
            "SERVING_CACHE_SECONDS": "60",
            "API_KEY_CACHE_SECONDS": "60",
            "SESSION_RECHECK_SECONDS": "60",
            "HISTORY_FLUSH_INTERVAL_SECONDS": "600",  # only the shutdown writes history
            # A paused storage must fail a request in seconds, not after boto3's 30 s default.
            "S3_READ_TIMEOUT_SECONDS": "3",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

    def env_for(self, name: str, **overrides: str) -> dict[str, str]:
        home = self.tmp_path / name
        home.mkdir()
        self.homes.append(home)
        return {
            **self.shared,
            **s3_environment(self.moto, self.bucket, home / "model-cache"),
            "MODEL_STORAGE_PATH": str(home / "models"),  # upload temporaries only, with S3
            "JOB_STORAGE_PATH": str(home / "jobs"),  # scratch only, with S3
            "STATIC_ROOT": str(home / "static"),
            **overrides,
        }

    def node(self, name: str, *, ready_path: str = "/api/v1/ready", **overrides: str) -> Node:
        node = Node(self.env_for(name, **overrides), self.tmp_path / f"node-{name}.log", ready_path=ready_path)
        self.started.append(node)
        return node

    def worker(self, name: str) -> CeleryWorker:
        worker = CeleryWorker(f"{name}-{self.run}", self.env_for(name), self.tmp_path / f"{name}.log")
        self.started.append(worker)
        return worker

    def beat(self) -> Beat:
        beat = Beat(self.env_for("beat"), self.tmp_path / "beat")
        self.started.append(beat)
        return beat

    def stop(self) -> None:
        for process in reversed(self.started):
            process.stop()
        import redis

        client = redis.Redis.from_url(BROKER_URL)
        leftovers = list(client.scan_iter(match=f"scale-{self.run}:*", count=1000))
        if leftovers:
            client.delete(*leftovers)


@pytest.fixture
def cluster(tmp_path, make_key):
    """Moto, two nodes, two workers and beat, torn down in reverse: the Cluster, with the nodes
    as .a and .b, the workers, and keys for the predict and manage scopes."""
    moto = MotoServer(tmp_path / "moto.log").start()
    parts = Cluster(tmp_path, moto, moto.new_bucket())
    try:
        a = parts.node("a")
        b = parts.node("b")
        workers = [parts.worker("w1"), parts.worker("w2")]
        parts.beat()
        keys = {scope: make_key("read", scope, name=f"scale-{scope}")[1] for scope in ("predict", "manage")}
        parts.a, parts.b, parts.workers, parts.keys = a, b, workers, keys
        yield parts
    finally:
        parts.stop()
        moto.stop()


X = {"X": [[1.0, 2.0, 3.0]]}


def validated_on(node, model_id: str, key: str) -> dict:
    """The model once its background validation (on the Celery workers) has ended."""
    return wait_validated(lambda: node.request("GET", f"/api/v1/models/{model_id}", key=key)[1])


def test_two_nodes_and_two_workers_share_models_changes_and_jobs(cluster):
    a, b, workers, keys = cluster.a, cluster.b, cluster.workers, cluster.keys
    predict_key, manage_key = keys["predict"], keys["manage"]
    served = 0

    def predict_on(node, model_id):
        nonlocal served
        status, body = node.post_json(f"/api/v1/models/{model_id}/predict", predict_key, {"input_data": X})
        served += status == 200
        return status, body

    # Uploaded through A, served by B (which has never seen the file: it comes from the bucket).
    status, model = a.upload_model(manage_key, "scaler", "1.0.0", make_scaled_model(2.0))
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
    status, second = a.upload_model(manage_key, "scaler", "1.1.0", make_scaled_model(3.0))
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
    status, iris = a.upload_model(manage_key, "jobs-scaler", "1.0.0", make_scaled_model(5.0))
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


def bucket_keys(cluster: Cluster, prefix: str) -> list[str]:
    pages = cluster.moto.client().get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def open_uploads(cluster: Cluster) -> list[str]:
    answer = cluster.moto.client().list_multipart_uploads(Bucket=cluster.bucket)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def job_rows(count: int, first: int) -> bytes:
    return b"".join(json.dumps({"X": [float(first + row), float(row), 1.0]}).encode() + b"\n" for row in range(count))


def files_under(home: Path) -> list[str]:
    return sorted(str(path.relative_to(home)) for path in home.rglob("*") if path.is_file())


def test_nothing_is_shared_but_the_bucket_the_database_and_redis(cluster):
    """The issue's bar: no directory shared by any two processes; batch jobs through both nodes
    run exactly once and are read back from either; DELETE removes the objects; a node with the
    wrong prefix is not ready and condemns nothing; a storage outage is a clean 503 and passes."""
    a, b, keys = cluster.a, cluster.b, cluster.keys
    predict_key, manage_key = keys["predict"], keys["manage"]
    homes = {home.name: home for home in cluster.homes}
    assert set(homes) == {"a", "b", "w1", "w2", "beat"}

    status, model = a.upload_model(manage_key, "bar", "1.0.0", make_scaled_model(2.0))
    assert status == 202, model
    assert validated_on(b, model["id"], manage_key)["status"] == "ready"
    status, body = b.post_json(f"/api/v1/models/{model['id']}/predict", predict_key, {"input_data": X})
    assert (status, body.get("output_data")) == (200, {"Y": [[2.0, 4.0, 6.0]]}), (body, b.log_tail())

    # Six batch jobs, created through alternating nodes, each a different number of rows.
    created = {}
    for index in range(6):
        node = (a, b)[index % 2]
        rows = 700 + 211 * index
        status, job = node.upload_job(predict_key, model["id"], job_rows(rows, first=1000 * index))
        assert status == 202, job
        created[job["id"]] = (rows, 1000 * index)

    def all_ended():
        jobs = list(Job.objects.filter(pk__in=created))
        return jobs if all(job.status in Job.TERMINAL for job in jobs) else None

    for job in poll(all_ended, bound=240, what="six batch jobs ended"):
        rows, first = created[str(job.pk)]
        assert (job.status, job.progress_done, job.progress_total) == (Job.Status.COMPLETED, rows, rows), (
            job.error_code,
            job.error_message,
        )
        # One attempt's output and the input, nothing else: no second run, no part left.
        prefix = f"jobs/{job.pk.hex[:2]}/{job.pk.hex}/"
        assert bucket_keys(cluster, prefix) == [prefix + "input.jsonl", prefix + job.output_file]
        # The same bytes from either node, one output per input row, in order.
        outputs = [node.raw(f"/api/v1/jobs/{job.pk}/result?format=jsonl", key=predict_key) for node in (a, b)]
        assert outputs[0] == outputs[1]
        status, content = outputs[0]
        assert status == 200
        lines = content.decode().splitlines()
        assert len(lines) == rows
        assert json.loads(lines[-1])["Y"] == [2.0 * (first + rows - 1), 2.0 * (rows - 1), 2.0]
    assert open_uploads(cluster) == []
    # No process kept a job's file (or a model) on its own disk: the bucket holds them.
    for name, home in homes.items():
        assert [path for path in files_under(home) if "input." in path or "output-" in path] == [], name

    # DELETE through B removes the job's objects; the other jobs keep theirs.
    gone, *kept = created
    assert b.request("DELETE", f"/api/v1/jobs/{gone}", key=predict_key)[0] == 204
    assert bucket_keys(cluster, f"jobs/{uuid.UUID(gone).hex[:2]}/{uuid.UUID(gone).hex}/") == []
    assert all(bucket_keys(cluster, f"jobs/{uuid.UUID(job).hex[:2]}/{uuid.UUID(job).hex}/") for job in kept)
    # ... and a version's DELETE its object (no other version has the same bytes).
    status, spare = a.upload_model(manage_key, "bar", "0.9.0", make_scaled_model(7.0))
    assert status == 202, spare
    spare = validated_on(a, spare["id"], manage_key)
    spare_key = f"models/{spare['file_sha256'][:2]}/{spare['file_sha256'][2:4]}/{spare['file_sha256']}.onnx"
    assert bucket_keys(cluster, spare_key) == [spare_key]
    assert b.request("DELETE", f"/api/v1/models/{spare['id']}", key=manage_key)[0] == 204
    assert bucket_keys(cluster, spare_key) == []

    # A third node with the wrong prefix: live, never ready, and it condemns nothing.
    c = cluster.node("c", ready_path="/api/v1/live", S3_PREFIX="models-of-another-deployment")
    status, _ = c.raw("/api/v1/ready")
    assert status == 503
    # (An input no node has answered yet: a cached answer needs no file, from any node.)
    fresh = {"input_data": {"X": [[4.0, 5.0, 6.0]]}}
    status, refused = c.post_json(f"/api/v1/models/{model['id']}/predict", predict_key, fresh)
    assert (status, refused.get("code")) == (503, "model_file_unavailable"), refused
    poll(
        lambda: any("model file confirmed present" in worker.log() for worker in cluster.workers),
        bound=60,
        what="a worker's confirmation that the file is there",
    )
    assert MLModel.objects.get(pk=model["id"]).status == "ready"
    status, body = a.post_json(f"/api/v1/models/{model['id']}/predict", predict_key, {"input_data": X})
    assert (status, body.get("output_data")) == (200, {"Y": [[2.0, 4.0, 6.0]]})
    c.stop()

    # A storage outage: clean 503s that name nothing internal, served models keep serving,
    # and everything works again once the storage is back.
    cluster.moto.pause()
    try:
        status, refused = a.upload_model(manage_key, "bar", "1.1.0", make_scaled_model(3.0))
        assert (status, refused["code"]) == (503, "storage_unavailable"), refused
        status, job_refused = b.upload_job(predict_key, model["id"], job_rows(10, first=0))
        assert (status, job_refused["code"]) == (503, "storage_unavailable"), job_refused
        for answer in (refused, job_refused):
            text = json.dumps(answer)
            for secret in (cluster.moto.endpoint, f"127.0.0.1:{cluster.moto.port}", cluster.bucket, "models/", "jobs/"):
                assert secret not in text, (secret, text)
            assert "request" in answer["detail"], answer
        status, body = b.post_json(f"/api/v1/models/{model['id']}/predict", predict_key, {"input_data": X})
        assert status == 200, body
    finally:
        cluster.moto.resume()
    status, recovered = poll(
        lambda: (answer := a.upload_model(manage_key, "bar", "1.1.0", make_scaled_model(3.0)))[0] == 202 and answer,
        bound=60,
        what="an upload once the storage is back",
    )  # fmt: skip
    assert validated_on(b, recovered["id"], manage_key)["status"] == "ready"
    status, body = b.post_json(f"/api/v1/models/{recovered['id']}/predict", predict_key, {"input_data": X})
    assert (status, body.get("output_data")) == (200, {"Y": [[3.0, 6.0, 9.0]]})
