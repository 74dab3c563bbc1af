"""A node started with the wrong S3_PREFIX (issue 22): it cannot see the registry's files, and
that must not become everyone's problem.

On one machine, as two machines would: a healthy node and a Celery worker with the deployment's
settings, and a third node whose S3_PREFIX has a typo, sharing PostgreSQL, Redis and an
S3-compatible bucket (moto's server mode). `manage.py migrate` (the deployment's settings) wrote
the sentinel into the bucket. The wrong node fails readiness and `check --deploy`, saying what
is wrong in its log and the check, nothing of it to the probe; a predict there is a 503 that
leaves the model `ready` (the worker's confirmation finds the object where it belongs), and the
healthy node serves on. A file really deleted from the bucket is confirmed by the worker, and
only then is the model `error` for every node.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from registry.models import MLModel
from registry.storage import ModelStore
from tests import granian_server
from tests.e2e.nodes import Node, poll
from tests.inference.factories import make_scaled_model
from tests.jobs.conftest import BROKER_URL, CeleryWorker, database_url
from tests.registry.polling import wait_validated
from tests.s3_server import MotoServer, s3_environment

BOUND = 120  # seconds: a safety net for a loaded CI machine, never a timing assertion
X = {"X": [[1.0, 2.0, 3.0]]}
NOT_OURS = "model storage does not hold this deployment's files (see the server log)"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),  # the nodes and the worker must see the test's rows
    pytest.mark.skipif(
        not (BROKER_URL and os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL", "").startswith("postgres")),
        reason="needs PostgreSQL (DATABASE_URL), Redis (REDIS_URL) and a broker (CELERY_BROKER_URL), as CI has",
    ),
]


def predict(node: Node, model_id: str, key: str):
    """(status, headers, JSON body) of a predict that skips the prediction cache."""
    status, headers, body = node.call(
        "POST",
        f"/api/v1/models/{model_id}/predict",
        key=key,
        body=json.dumps({"input_data": X, "skip_cache": True}).encode(),
        content_type="application/json",
    )
    return status, headers, json.loads(body)


def upload(node: Node, key: str, name: str, version: str, data: bytes) -> dict:
    status, answer = node.upload_model(key, name, version, data)
    assert status == 202, answer
    return answer


def confirmed(worker: CeleryWorker, outcome: str) -> bool:
    """Whether the worker's log has a confirmation that ended with `outcome` (Celery logs each
    task's return value)."""
    return (
        re.search(rf"Task registry\.confirm_file\[[^\]]+\] succeeded in [^:]+: '{outcome}'", worker.log()) is not None
    )


@pytest.fixture
def deployment(tmp_path, make_key):
    """Moto with the deployment's bucket (migrated: the sentinel is in it), the healthy node and
    a worker; yields (env_for, healthy node, worker, keys, moto, bucket, started list)."""
    moto = MotoServer(tmp_path / "moto.log").start()
    bucket = moto.new_bucket()
    run = uuid.uuid4().hex[:8]
    shared = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": "wrong-prefix-test-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url(),
        "CACHE_KEY_PREFIX": f"prefix-{run}",
        "CELERY_BROKER_KEY_PREFIX": f"prefix-{run}:",
        "JOB_STORAGE_PATH": str(tmp_path / "jobs"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }

    def env_for(name: str, *, prefix: str = "models") -> dict[str, str]:
        return {**shared, **s3_environment(moto, bucket, tmp_path / f"cache-{name}"), "S3_PREFIX": prefix}

    started: list = []
    try:
        granian_server.manage(env_for("migrate"), "migrate", "--noinput")  # as the migration Job does
        healthy = Node(env_for("a"), tmp_path / "node-a.log", ready_path="/api/v1/ready")
        started.append(healthy)
        worker = CeleryWorker(f"w-{run}", env_for("w"), tmp_path / "worker.log")
        started.append(worker)
        keys = {scope: make_key("read", scope, name=f"prefix-{scope}")[1] for scope in ("predict", "manage")}
        yield env_for, healthy, worker, keys, moto, bucket, started
    finally:
        for process in reversed(started):
            process.stop()
        moto.stop()
        import redis

        client = redis.Redis.from_url(BROKER_URL)
        leftovers = list(client.scan_iter(match=f"prefix-{run}:*", count=1000))
        if leftovers:
            client.delete(*leftovers)


def test_a_node_with_the_wrong_prefix_is_not_ready_and_changes_nothing(deployment, tmp_path):
    env_for, healthy, worker, keys, moto, bucket, started = deployment
    predict_key, manage_key = keys["predict"], keys["manage"]

    model = upload(healthy, manage_key, "scaler", "1.0.0", make_scaled_model(2.0))
    model = wait_validated(lambda: healthy.get(f"/api/v1/models/{model['id']}", manage_key)[1])
    assert model["status"] == "ready", model
    status, _, body = predict(healthy, model["id"], predict_key)
    assert (status, body["output_data"]) == (200, {"Y": [[2.0, 4.0, 6.0]]})

    # The third node: same everything, but S3_PREFIX has a typo. It starts (it is alive)...
    wrong_env = env_for("c", prefix="modles")
    wrong = Node(wrong_env, tmp_path / "node-c.log", ready_path="/api/v1/live")
    started.append(wrong)

    # ...but is not ready, and says why: a short reason to the probe, everything in its log.
    status, ready = wrong.get("/api/v1/ready")
    assert (status, ready) == (503, {"status": NOT_OURS})
    status, _, v2 = wrong.call("GET", "/v2/health/ready")
    assert status == 503 and bucket.encode() not in v2
    logged = poll(
        lambda: "model storage check failed" in wrong.log_text() and wrong.log_text(), bound=BOUND, what="the log"
    )
    assert f"the bucket '{bucket}' at {moto.endpoint}, prefix 'modles'" in logged
    assert "_modelforge/sentinel.json with deployment" in logged
    assert healthy.get("/api/v1/ready") == (200, {"status": "ready"})

    # check --deploy with its settings fails naming the storage; with the healthy node's it passes.
    checked = granian_server.manage(wrong_env, "check", "--deploy", check=False)
    assert checked.returncode != 0
    output = checked.stdout + checked.stderr
    assert "registry.E001" in output and f"bucket '{bucket}'" in output and "prefix 'modles'" in output
    passed = granian_server.manage(env_for("a"), "check", "--deploy", check=False)
    assert "registry.E0" not in passed.stdout + passed.stderr

    # A predict there is a 503 that names no bucket; the model stays ready for everyone.
    status, headers, body = predict(wrong, model["id"], predict_key)
    assert (status, body["code"]) == (503, "model_file_unavailable"), body
    assert headers["Retry-After"] == "5" and headers["X-Request-ID"] in body["detail"]
    assert bucket not in body["detail"] and "modles" not in body["detail"]
    # The worker confirms from the deployment's storage: the file is there; nothing changes.
    poll(lambda: confirmed(worker, "present"), bound=BOUND, what="the worker's confirmation")
    assert MLModel.objects.get(pk=model["id"]).status == MLModel.Status.READY
    status, _, body = predict(healthy, model["id"], predict_key)
    assert (status, body["output_data"]) == (200, {"Y": [[2.0, 4.0, 6.0]]})

    # The wrong node counts what it could not read.
    status, _, metrics = wrong.call("GET", "/metrics", key=predict_key)
    assert status == 200
    failures = {
        (sample.labels["model"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(metrics.decode())
        for sample in family.samples
        if sample.name == "modelforge_model_file_failures_total"
    }
    assert failures == {("scaler", "file_missing"): 1.0}


def test_a_file_deleted_from_the_bucket_is_confirmed_by_the_worker_and_then_refused_everywhere(deployment, tmp_path):
    env_for, healthy, worker, keys, moto, bucket, started = deployment
    predict_key, manage_key = keys["predict"], keys["manage"]
    model = upload(healthy, manage_key, "scaler", "2.0.0", make_scaled_model(3.0))
    model = wait_validated(lambda: healthy.get(f"/api/v1/models/{model['id']}", manage_key)[1])
    assert model["status"] == "ready", model

    sha256 = model["file_sha256"]
    moto.client().delete_object(Bucket=bucket, Key=f"models/{ModelStore.name_for(sha256)}")
    (tmp_path / "cache-a" / ModelStore.name_for(sha256)).unlink()  # the node's copy from the upload

    status, _, body = predict(healthy, model["id"], predict_key)
    assert (status, body["code"]) == (503, "model_file_unavailable"), body

    def refused():
        status, _, body = predict(healthy, model["id"], predict_key)
        return status == 409 and body

    body = poll(refused, bound=BOUND, what="the model refused after the confirmation")
    assert body["code"] == "model_not_ready" and "file_missing" in body["detail"]
    row = MLModel.objects.get(pk=model["id"])
    assert (row.status, row.error_code) == (MLModel.Status.ERROR, "file_missing")
    assert confirmed(worker, "file_missing")
    assert healthy.get("/api/v1/ready")[0] == 200  # one deleted file takes no node out of service
