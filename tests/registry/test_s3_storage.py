"""Model storage on a real S3-compatible server (moto's server mode on loopback): uploads land
in the bucket, another process loads them from it, deletes remove the object only when no row
uses it, every copy is verified, and a storage that is down is a clear 503 that leaves no
model behind."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.sessions import get_pool
from registry.models import MLModel
from registry.sentinel import sentinel_write
from registry.storage import ModelStore
from registry.tasks import confirm_model_file
from tests.inference.factories import make_scaled_model
from tests.s3_server import MotoServer, s3_environment, storage_options

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"
X = {"input_data": {"X": [[1.0, 2.0, 3.0]]}, "skip_cache": True}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


def use_bucket(settings, tmp_path, server: MotoServer) -> str:
    """Point this process's model storage at a new bucket on `server`, with its own cache and
    this deployment's sentinel in it (as `migrate` writes it: registry.sentinel)."""
    bucket = server.new_bucket()
    settings.STORAGES = {**settings.STORAGES, "models": storage_options(server, bucket)}
    settings.MODEL_CACHE_PATH = tmp_path / "cache"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "cache" / "tmp")
    (tmp_path / "cache" / "tmp").mkdir(parents=True)
    sentinel_write()
    return bucket


@pytest.fixture
def bucket(settings, tmp_path, moto) -> str:
    return use_bucket(settings, tmp_path, moto)


def object_key(sha256: str) -> str:
    return f"models/{sha256[:2]}/{sha256[2:4]}/{sha256}.onnx"


def object_bytes(server: MotoServer, bucket: str, sha256: str) -> bytes | None:
    client = server.client()
    try:
        return client.get_object(Bucket=bucket, Key=object_key(sha256))["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def register(client, data: bytes, *, name: str = "scaler", version: str = "1.0.0"):
    upload = SimpleUploadedFile("model.onnx", data, content_type="application/octet-stream")
    return client.post(MODELS, {"name": name, "version": version, "file": upload}, format="multipart")


def predict(client, model_id: str):
    return client.post(f"{MODELS}/{model_id}/predict", X, format="json")


def test_upload_stores_the_model_in_the_bucket_and_serves_it(bucket, moto, manage_client, client_for):
    data = make_scaled_model(2.0)
    response = register(manage_client, data)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "ready", body
    assert object_bytes(moto, bucket, body["file_sha256"]) == data

    answer = predict(client_for("predict"), body["id"])
    assert answer.status_code == 200, answer.json()
    assert answer.json()["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}


def test_another_process_loads_the_model_from_the_bucket(bucket, moto, manage_client, tmp_path):
    """A process with an empty cache of its own (another node) gets the verified bytes."""
    body = register(manage_client, make_scaled_model(3.0)).json()
    other_cache = tmp_path / "other-node-cache"
    script = (
        "import django, json, sys; django.setup()\n"
        "import numpy, onnxruntime\n"
        "from registry.storage import ModelStore\n"
        "store = ModelStore()\n"
        "data = store.read_verified(sys.argv[1])\n"
        "session = onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider'])\n"
        "y = session.run(None, {'X': numpy.array([[1, 2, 3]], dtype=numpy.float32)})[0]\n"
        "print(json.dumps({'path': str(store.path_for(sys.argv[1])), 'y': y.tolist()}))\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelforge_site.settings",
        **s3_environment(moto, bucket, other_cache),
    }
    environment["S3_BUCKET"] = bucket
    result = subprocess.run(
        [sys.executable, "-c", script, body["file_sha256"]],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["y"] == [[3.0, 6.0, 9.0]]
    cached = other_cache / body["file_sha256"][:2] / body["file_sha256"][2:4] / f"{body['file_sha256']}.onnx"
    assert loaded["path"] == str(cached)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == body["file_sha256"]


def test_delete_removes_the_object_only_when_no_version_uses_it(
    bucket, moto, manage_client, django_capture_on_commit_callbacks
):
    data = make_scaled_model(4.0)
    first = register(manage_client, data, version="1.0.0").json()
    second = register(manage_client, data, version="1.0.1").json()
    sha = first["file_sha256"]
    assert second["file_sha256"] == sha

    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.delete(f"{MODELS}/{first['id']}").status_code == 204
    assert object_bytes(moto, bucket, sha) == data  # 1.0.1 still uses it

    with django_capture_on_commit_callbacks(execute=True):
        assert manage_client.delete(f"{MODELS}/{second['id']}").status_code == 204
    assert object_bytes(moto, bucket, sha) is None
    assert not ModelStore().path_for(sha).exists()  # and this node's cached copy


def test_a_damaged_cached_copy_is_fetched_again_and_served(bucket, manage_client, client_for):
    body = register(manage_client, make_scaled_model(5.0)).json()
    ModelStore().path_for(body["file_sha256"]).write_bytes(make_scaled_model(500.0))
    get_pool().clear()

    answer = predict(client_for("predict"), body["id"])
    assert answer.status_code == 200, answer.json()
    assert answer.json()["output_data"] == {"Y": [[5.0, 10.0, 15.0]]}
    assert hashlib.sha256(ModelStore().path_for(body["file_sha256"]).read_bytes()).hexdigest() == body["file_sha256"]


def test_an_object_changed_in_the_bucket_is_never_served(bucket, moto, manage_client, client_for):
    body = register(manage_client, make_scaled_model(6.0)).json()
    sha = body["file_sha256"]
    moto.client().put_object(Bucket=bucket, Key=object_key(sha), Body=make_scaled_model(600.0))
    ModelStore().forget_local(sha)
    get_pool().clear()

    answer = predict(client_for("predict"), body["id"])
    assert (answer.status_code, answer.json()["code"]) == (503, "model_file_unavailable")
    assert MLModel.objects.get(pk=body["id"]).status == MLModel.Status.READY  # until a worker confirms
    assert not ModelStore().path_for(sha).exists()  # the bad download (twice) was never kept

    assert confirm_model_file(body["id"], sha) == "checksum_mismatch"
    assert MLModel.objects.get(pk=body["id"]).status == MLModel.Status.ERROR
    answer = predict(client_for("predict"), body["id"])
    assert (answer.status_code, answer.json()["code"]) == (409, "model_not_ready")


def test_an_object_put_back_before_the_confirmation_leaves_the_model_ready(bucket, moto, manage_client, client_for):
    """A bucket being restored: a node that fetched meanwhile answers 503; the worker reads the
    object again, finds the right bytes, and changes nothing."""
    data = make_scaled_model(6.5)
    body = register(manage_client, data).json()
    sha = body["file_sha256"]
    moto.client().delete_object(Bucket=bucket, Key=object_key(sha))
    ModelStore().forget_local(sha)
    get_pool().clear()
    answer = predict(client_for("predict"), body["id"])
    assert (answer.status_code, answer.json()["code"]) == (503, "model_file_unavailable")

    moto.client().put_object(Bucket=bucket, Key=object_key(sha), Body=data)
    assert confirm_model_file(body["id"], sha) == "present"
    assert MLModel.objects.get(pk=body["id"]).status == MLModel.Status.READY
    answer = predict(client_for("predict"), body["id"])
    assert answer.status_code == 200, answer.json()
    assert answer.json()["output_data"] == {"Y": [[6.5, 13.0, 19.5]]}


def test_the_cache_keeps_the_least_recently_used_copies_within_its_bound(bucket, manage_client, settings):
    shas = [
        register(manage_client, make_scaled_model(float(n)), version=f"1.0.{n}").json()["file_sha256"] for n in (1, 2)
    ]
    store = ModelStore()
    size = store.path_for(shas[0]).stat().st_size
    settings.MODEL_CACHE_MAX_MB = 2.5 * size / (1024 * 1024)  # room for two copies, not three
    now = time.time()
    os.utime(store.path_for(shas[0]), (now - 300, now - 300))  # both used minutes ago,
    os.utime(store.path_for(shas[1]), (now - 200, now - 200))  # the first one longest ago

    store.fetch(shas[0])  # used again: now the most recent
    third = register(manage_client, make_scaled_model(3.0), version="1.0.3").json()["file_sha256"]

    assert not store.path_for(shas[1]).exists()  # the least recently used went
    assert store.path_for(shas[0]).exists() and store.path_for(third).exists()
    assert store.read_verified(shas[1]) == make_scaled_model(2.0)  # and comes back on demand
    # Copies used just now may be being opened by a reader: kept, even over the bound, for a while.
    assert all(store.path_for(sha).exists() for sha in (*shas, third))


# --- the storage down ---------------------------------------------------------------------------


@pytest.fixture
def own_moto(tmp_path):
    """A server of this test's own, to stop mid-test without breaking the others."""
    server = MotoServer(tmp_path / "moto.log").start()
    yield server
    server.stop()


def test_storage_down_on_upload_is_503_and_registers_nothing(settings, tmp_path, own_moto, manage_client):
    use_bucket(settings, tmp_path, own_moto)
    own_moto.stop()

    response = register(manage_client, make_scaled_model(7.0))
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "storage_unavailable"
    assert "storage" in body["detail"]
    assert not MLModel.objects.exists()
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the staged upload is gone too
    assert not list((tmp_path / "cache").glob("??/??/*.onnx"))


def test_storage_down_on_a_new_version_keeps_the_served_one(settings, tmp_path, own_moto, manage_client, client_for):
    use_bucket(settings, tmp_path, own_moto)
    body = register(manage_client, make_scaled_model(8.0)).json()
    own_moto.stop()

    response = register(manage_client, make_scaled_model(9.0), version="1.1.0")
    assert response.status_code == 503
    assert response.json()["code"] == "storage_unavailable"
    assert not MLModel.objects.filter(name="scaler", version="1.1.0").exists()
    model = MLModel.objects.get(pk=body["id"])
    assert (model.status, model.file_sha256) == (MLModel.Status.READY, body["file_sha256"])
    answer = predict(client_for("predict"), body["id"])  # served from this node's verified copy
    assert answer.json()["output_data"] == {"Y": [[8.0, 16.0, 24.0]]}


def test_storage_down_when_a_node_needs_the_file_is_503_and_the_model_stays_ready(
    settings, tmp_path, own_moto, manage_client, client_for
):
    use_bucket(settings, tmp_path, own_moto)
    body = register(manage_client, make_scaled_model(10.0)).json()
    ModelStore().forget_local(body["file_sha256"])  # a node that never had it
    get_pool().clear()
    own_moto.stop()

    answer = predict(client_for("predict"), body["id"])
    assert answer.status_code == 503
    assert answer.json()["code"] == "storage_unavailable"
    assert MLModel.objects.get(pk=body["id"]).status == MLModel.Status.READY  # not the file's fault


def test_a_storage_outage_tells_the_client_no_endpoint_bucket_or_key_only_the_request_id(
    settings, tmp_path, own_moto, manage_client, client_for
):
    bucket = use_bucket(settings, tmp_path, own_moto)
    body = register(manage_client, make_scaled_model(11.0)).json()
    ModelStore().forget_local(body["file_sha256"])
    get_pool().clear()
    own_moto.stop()

    for response in (
        register(manage_client, make_scaled_model(12.0), version="1.1.0"),
        predict(client_for("predict"), body["id"]),
    ):
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert response.json()["code"] == "storage_unavailable"
        for internal in ("http", "127.0.0.1", str(own_moto.port), bucket, "models/", body["file_sha256"]):
            assert internal not in detail, (internal, detail)
        assert f"request {response['X-Request-ID']}" in detail  # what to quote to an operator


def test_health_names_the_storage_when_the_bucket_is_down(settings, tmp_path, own_moto, api_client):
    use_bucket(settings, tmp_path, own_moto)
    response = api_client.get("/api/v1/health")
    assert response.json()["components"]["storage"] == {"ok": True, "detail": "ok"}
    own_moto.stop()

    response = api_client.get("/api/v1/health")
    assert response.status_code == 503
    assert "storage" in response.json()["degraded"]
    assert response.json()["components"]["storage"]["ok"] is False


def test_health_names_the_storage_when_the_bucket_does_not_exist(settings, moto, api_client):
    settings.STORAGES = {**settings.STORAGES, "models": storage_options(moto, "no-such-bucket")}
    response = api_client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["components"]["storage"]["ok"] is False


def test_storage_down_on_validate_ends_with_a_code_that_says_so(settings, tmp_path, own_moto, manage_client):
    use_bucket(settings, tmp_path, own_moto)
    body = register(manage_client, make_scaled_model(11.0)).json()
    ModelStore().forget_local(body["file_sha256"])
    own_moto.stop()

    response = manage_client.post(f"{MODELS}/{body['id']}/validate")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["error_code"]) == ("error", "storage_unavailable")


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MODEL_STORAGE_BACKEND": "ftp"}, "MODEL_STORAGE_BACKEND must be filesystem or s3"),
        ({"MODEL_STORAGE_BACKEND": "s3", "S3_BUCKET": ""}, "S3_BUCKET must be set"),
        ({"MODEL_CACHE_MAX_MB": "0"}, "MODEL_CACHE_MAX_MB must be a positive number"),
        # Job files (jobs/storage.py) live in the same bucket, under a prefix of their own.
        ({"JOB_STORAGE_BACKEND": "nfs"}, "JOB_STORAGE_BACKEND must be local or s3"),
        ({"JOB_STORAGE_BACKEND": "s3", "MODEL_STORAGE_BACKEND": "filesystem"}, "set MODEL_STORAGE_BACKEND=s3"),
        ({"MODEL_STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "S3_JOBS_PREFIX": "/"}, "S3_JOBS_PREFIX must be set"),
        (
            {"MODEL_STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "S3_PREFIX": "shared", "S3_JOBS_PREFIX": "shared/"},
            "S3_JOBS_PREFIX must be set and differ from S3_PREFIX",
        ),
    ],
)
def test_bad_storage_settings_stop_start_up_naming_the_variable(variables, message):
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "modelforge_site.settings", **variables}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
