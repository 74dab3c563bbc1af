"""Job files in the bucket (JOB_STORAGE_BACKEND=s3) on a real S3-compatible server (moto's
server mode on loopback): inputs are uploaded there, a real Celery worker that shares no
folder with the API reads them and writes its output there, `result` streams it back, retries,
deletes and the retention act on the objects, a lost attempt's output never becomes the
result, and a bucket that is down is a clean 503 (or a retried job), never a leak of where it is.
"""

from __future__ import annotations

import math
import os
import signal
import uuid
from datetime import timedelta

import numpy as np
import orjson
import pytest
from django.utils import timezone

from jobs import services, storage
from jobs.errors import BadRow
from jobs.models import Job
from registry.errors import StorageUnavailable
from tests.jobs.api import (
    create_file,
    created,
    job_url,
    output_lines,
    result_url,
    wait_finished,
    wait_status,
)
from tests.jobs.conftest import BROKER_URL, NO_BROKER, CeleryStack, point_celery_at
from tests.jobs.factories import (
    csv_bytes,
    iris_model,
    iris_rows,
    jsonl_bytes,
    npy_bytes,
    reference_outputs,
    slow_model,
    uploaded_input,
)
from tests.s3_server import MotoServer, s3_environment, storage_options

# Transactional: the embedded runner's threads and the Celery worker must see the rows. The
# tests that drive the services themselves are not, so that no runner thread takes their jobs.
pytestmark = pytest.mark.django_db(transaction=True)
not_transactional = pytest.mark.django_db

PREFIX = "jobs"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_bucket(moto) -> str:
    return moto.new_bucket()


def use_bucket(settings, tmp_path, server: MotoServer, bucket: str) -> None:
    """Models and job files of this (the API's) process in ``bucket``; its own local scratch."""
    settings.STORAGES = {**settings.STORAGES, "models": storage_options(server, bucket)}
    settings.MODEL_STORAGE_BACKEND = "s3"
    settings.JOB_STORAGE_BACKEND = "s3"
    settings.S3_JOBS_PREFIX = PREFIX
    settings.MODEL_CACHE_PATH = tmp_path / "cache"
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "cache" / "tmp")
    (tmp_path / "cache" / "tmp").mkdir(parents=True, exist_ok=True)
    settings.JOB_STORAGE_PATH = tmp_path / "api-scratch"


@pytest.fixture
def bucket(settings, tmp_path, moto, module_bucket) -> str:
    use_bucket(settings, tmp_path, moto, module_bucket)
    return module_bucket


@pytest.fixture
def own_bucket(settings, tmp_path, moto) -> str:
    """A bucket of the test's own: rows of other tests' jobs are gone (transactional tests), so
    their objects would look orphaned here."""
    name = moto.new_bucket()
    use_bucket(settings, tmp_path, moto, name)
    return name


def job_keys(server: MotoServer, bucket: str, job_id) -> list[str]:
    """The names of a job's objects, sorted."""
    prefix = f"{PREFIX}/{uuid.UUID(str(job_id)).hex[:2]}/{uuid.UUID(str(job_id)).hex}/"
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"][len(prefix) :] for item in listed.get("Contents", ()))


def job_uploads(server: MotoServer, bucket: str, job_id) -> list[str]:
    """The names of a job's unfinished multipart uploads."""
    prefix = f"{PREFIX}/{uuid.UUID(str(job_id)).hex[:2]}/{uuid.UUID(str(job_id)).hex}/"
    listed = server.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return sorted(upload["Key"][len(prefix) :] for upload in listed.get("Uploads", ()))


def object_bytes(server: MotoServer, bucket: str, job_id, name: str) -> bytes:
    hex_id = uuid.UUID(str(job_id)).hex
    return server.client().get_object(Bucket=bucket, Key=f"{PREFIX}/{hex_id[:2]}/{hex_id}/{name}")["Body"].read()


def local_files(root) -> list:
    """Files under a node's JOB_STORAGE_PATH other than its scratch folder."""
    return [path for path in root.rglob("*") if path.is_file() and "tmp" not in path.relative_to(root).parts]


def assert_iris_output(lines: list[dict], rows: np.ndarray) -> None:
    expected = reference_outputs(iris_model(), {"X": rows})
    assert len(lines) == len(rows)
    assert [line["label"] for line in lines] == expected["label"].tolist()
    np.testing.assert_allclose([line["probabilities"] for line in lines], expected["probabilities"], rtol=1e-5)


# --- a real Celery worker that shares no folder with the API -----------------------------------


@pytest.fixture(scope="module")
def s3_stack(django_db_setup, tmp_path_factory, moto, module_bucket):
    if not BROKER_URL:
        pytest.skip(NO_BROKER)
    root = tmp_path_factory.mktemp("celery-s3")
    stack = CeleryStack(root)
    env = s3_environment(moto, module_bucket, root / "worker-model-cache")
    env.update(JOB_STORAGE_BACKEND="s3", S3_JOBS_PREFIX=PREFIX, JOB_STORAGE_PATH=str(root / "worker-scratch"))
    stack.worker = stack.start_worker(f"s3-{os.getpid()}", **env)
    stack.worker_scratch = root / "worker-scratch"
    yield stack
    stack.stop()


@pytest.fixture
def s3_worker(s3_stack, settings, tmp_path, moto, module_bucket):
    from django.conf import settings as live_settings

    s3_stack.configure(settings)
    use_bucket(settings, tmp_path, moto, module_bucket)  # after configure: the API's own scratch
    yield s3_stack.worker
    for job in Job.objects.active():
        services.job_cancel(job=job)
    point_celery_at(BROKER_URL, "", live_settings)


@pytest.mark.slow
@pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER)
def test_a_file_job_goes_through_the_bucket_end_to_end(s3_worker, s3_stack, jobs_client, make_model, moto, settings):
    """200,000 rows: the input (over 8 MiB) is uploaded in parts, the output (over 8 MiB too)
    is written in parts as the worker goes, and both come back exactly."""
    bucket = settings.STORAGES["models"]["OPTIONS"]["bucket_name"]
    iris = make_model(iris_model())
    rows = iris_rows(200_000, seed=7)
    content = jsonl_bytes(rows)
    assert len(content) > storage.PART_SIZE
    job = created(create_file(jobs_client, iris, content, "rows.jsonl"))
    assert job["input"]["rows"] == 200_000

    response = wait_finished(jobs_client, job["id"], timeout=180)
    assert response.status_code == 200, response.json()
    assert response.json()["rows"] == 200_000
    assert_iris_output(output_lines(jobs_client, job["id"]), rows)
    csv_lines = b"".join(jobs_client.get(result_url(job["id"], format="csv")).streaming_content).splitlines()
    assert len(csv_lines) == 200_001  # the header, then a line per row

    assert job_keys(moto, bucket, job["id"]) == ["input.jsonl", "output-1.jsonl"]
    assert job_uploads(moto, bucket, job["id"]) == []
    assert object_bytes(moto, bucket, job["id"], "input.jsonl") == content
    head = moto.client().head_object(
        Bucket=bucket, Key=f"{PREFIX}/{job['id'][:2]}/{uuid.UUID(job['id']).hex}/output-1.jsonl"
    )
    assert head["ETag"].endswith(f'-{math.ceil(head["ContentLength"] / storage.PART_SIZE)}"')  # parts, as it went
    assert Job.objects.get(pk=job["id"]).worker == s3_worker.name
    # Neither node kept a job file of its own: the bucket is the only place they are.
    assert local_files(settings.JOB_STORAGE_PATH) == []
    assert local_files(s3_stack.worker_scratch) == []

    assert jobs_client.delete(job_url(job["id"])).status_code == 204
    assert job_keys(moto, bucket, job["id"]) == []


@pytest.mark.slow
@pytest.mark.skipif(not BROKER_URL, reason=NO_BROKER)
def test_killed_attempts_output_never_becomes_the_result(s3_worker, jobs_client, make_model, moto, settings):
    """The pool process dies mid-job: attempt 2 completes, and only its output exists."""
    bucket = settings.STORAGES["models"]["OPTIONS"]["bucket_name"]
    slow = make_model(slow_model(), name="slow")
    rows = iris_rows(1_000)
    job = created(create_file(jobs_client, slow, jsonl_bytes(rows), "rows.jsonl"))
    wait_status(jobs_client, job["id"], lambda j: j["progress"]["done"] > 0, timeout=60)
    for pid in s3_worker.pool_pids():
        os.kill(pid, signal.SIGKILL)
    result = wait_finished(jobs_client, job["id"], timeout=120)
    assert result.status_code == 200, result.json()
    finished = Job.objects.get(pk=job["id"])
    assert (finished.attempts, finished.output_file) == (2, "output-2.jsonl")
    assert job_keys(moto, bucket, job["id"]) == ["input.jsonl", "output-2.jsonl"]
    assert job_uploads(moto, bucket, job["id"]) == []
    expected = reference_outputs(slow_model(), {"X": rows})["Y"]
    np.testing.assert_allclose([line["Y"] for line in output_lines(jobs_client, job["id"])], expected, rtol=1e-5)


# --- the same services on the embedded runner, in this process ---------------------------------


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "npy"])
def test_each_input_format_is_read_from_the_bucket(bucket, jobs_client, make_model, moto, settings, file_format):
    settings.JOB_CHUNK_ROWS = 64
    iris = make_model(iris_model())
    rows = iris_rows(1_000, seed=3)
    content = {"jsonl": jsonl_bytes, "csv": csv_bytes, "npy": npy_bytes}[file_format](rows)
    job = created(create_file(jobs_client, iris, content, f"rows.{file_format}"))
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 200, response.json()
    assert response.json()["rows"] == 1_000
    assert_iris_output(output_lines(jobs_client, job["id"]), rows)
    assert job_keys(moto, bucket, job["id"]) == [f"input.{file_format}", "output-1.jsonl"]
    assert object_bytes(moto, bucket, job["id"], f"input.{file_format}") == content
    assert local_files(settings.JOB_STORAGE_PATH) == []
    assert list((settings.JOB_STORAGE_PATH / "tmp").iterdir()) == []  # the upload, once stored
    download = jobs_client.get(result_url(job["id"], format="jsonl"))
    output = object_bytes(moto, bucket, job["id"], "output-1.jsonl")
    assert (download["Content-Length"], b"".join(download.streaming_content)) == (str(len(output)), output)


def test_retry_copy_shares_the_input_in_the_bucket(bucket, jobs_client, make_model, moto):
    iris = make_model(iris_model())
    rows = iris_rows(300, seed=4)
    original = created(create_file(jobs_client, iris, jsonl_bytes(rows), "rows.jsonl"))
    assert wait_finished(jobs_client, original["id"]).status_code == 200
    Job.objects.filter(pk=original["id"]).update(status=Job.Status.FAILED)

    copy = services.job_resubmit(job=Job.objects.get(pk=original["id"]))
    assert object_bytes(moto, bucket, copy.pk, "input.jsonl") == jsonl_bytes(rows)
    assert wait_finished(jobs_client, str(copy.pk)).status_code == 200
    assert_iris_output(output_lines(jobs_client, str(copy.pk)), rows)
    # Deleting one job leaves the other's input in place.
    assert jobs_client.delete(job_url(original["id"])).status_code == 204
    assert job_keys(moto, bucket, original["id"]) == []
    assert job_keys(moto, bucket, copy.pk) == ["input.jsonl", "output-1.jsonl"]


@not_transactional
def test_a_run_that_lost_its_job_leaves_no_output_and_the_winner_removes_earlier_ones(bucket, make_model, moto):
    """Attempt 1 was taken over (its worker seemed lost) but runs on, after leaving the
    unfinished multipart upload of an output over one part. The winner's output is the only
    one (the upload aborted); the loser writes nothing."""
    iris = make_model(iris_model())
    rows = iris_rows(50)
    job = services.job_create(model=iris, input_file=uploaded_input(jsonl_bytes(rows)))
    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED)
    lost = services.job_claim(job_id=job.pk, worker="w1")
    hex_id = job.pk.hex
    moto.client().create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/{hex_id[:2]}/{hex_id}/output-1.jsonl")
    winner = services.job_claim(job_id=job.pk, worker="w2", redelivered=True)
    assert job_uploads(moto, bucket, job.pk) == ["output-1.jsonl"]

    services.job_execute(job=winner)
    assert job_keys(moto, bucket, job.pk) == ["input.jsonl", "output-2.jsonl"]
    assert job_uploads(moto, bucket, job.pk) == []  # the dead attempt's upload, aborted
    with pytest.raises(services.JobSuperseded):
        services.job_execute(job=lost)  # stops at its first chunk
    assert job_keys(moto, bucket, job.pk) == ["input.jsonl", "output-2.jsonl"]
    assert job_uploads(moto, bucket, job.pk) == []  # its own upload, aborted
    finished = Job.objects.get(pk=job.pk)
    assert (finished.status, finished.output_file) == (Job.Status.COMPLETED, "output-2.jsonl")
    lines = [orjson.loads(line) for line in object_bytes(moto, bucket, job.pk, "output-2.jsonl").splitlines()]
    assert_iris_output(lines, rows)


@not_transactional
def test_a_run_that_fails_after_sending_parts_aborts_its_upload(bucket, make_model, moto, monkeypatch):
    """Over 5 MiB of output has gone to the bucket as parts when the last row turns out bad:
    the upload is aborted, and no output object ever appears."""
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    iris = make_model(iris_model())
    lines = jsonl_bytes(iris_rows(90_000, seed=5)).splitlines(keepends=True)
    lines[-1] = b'{"X": [1.0, 2.0, 3.0]}\n'
    job = services.job_create(model=iris, input_file=uploaded_input(b"".join(lines)))
    claimed = services.job_claim(job_id=job.pk, worker="w1")
    with pytest.raises(BadRow, match="Row 90000"):
        services.job_execute(job=claimed)
    assert job_keys(moto, bucket, job.pk) == ["input.jsonl"]
    assert job_uploads(moto, bucket, job.pk) == []


@not_transactional
def test_retention_removes_expired_jobs_objects_and_orphans(own_bucket, make_model, moto, settings):
    bucket = own_bucket
    settings.JOB_RETENTION_DAYS = 7
    iris = make_model(iris_model())

    def file_job(status: str, days_ago: float) -> Job:
        job = services.job_create(model=iris, input_file=uploaded_input(jsonl_bytes(iris_rows(3))))
        Job.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now() - timedelta(days=days_ago))
        return job

    expired = file_job(Job.Status.FAILED, 30)
    active = file_job(Job.Status.RUNNING, 30)  # never deleted while running
    client = moto.client()
    orphan, upload_only = uuid.uuid4(), uuid.uuid4()  # files of jobs whose rows were never written
    orphan_prefix = f"{PREFIX}/{orphan.hex[:2]}/{orphan.hex}/"
    client.put_object(Bucket=bucket, Key=orphan_prefix + "input.jsonl", Body=b"{}\n")
    client.create_multipart_upload(Bucket=bucket, Key=orphan_prefix + "output-1.jsonl")
    client.create_multipart_upload(
        Bucket=bucket, Key=f"{PREFIX}/{upload_only.hex[:2]}/{upload_only.hex}/output-1.jsonl"
    )

    # Eight days from now, the orphans (stored just now) have been unchanged for the retention.
    report = services.jobs_cleanup(now=timezone.now() + timedelta(days=8))
    assert report == {"jobs": 1, "orphan_folders": 2}
    assert set(Job.objects.values_list("pk", flat=True)) == {active.pk}
    assert job_keys(moto, bucket, expired.pk) == []
    assert job_keys(moto, bucket, active.pk) == ["input.jsonl"]
    for gone in (orphan, upload_only):
        assert (job_keys(moto, bucket, gone), job_uploads(moto, bucket, gone)) == ([], [])
    assert services.jobs_cleanup(now=timezone.now() + timedelta(days=8)) == {"jobs": 0, "orphan_folders": 0}


@pytest.mark.parametrize(
    ("filename", "content", "status", "code"),
    [
        ("rows.jsonl", b"this is not json\n", 400, "invalid_input_file"),
        ("rows.csv", b"1,2,3,4\n1,2,3\n", 400, "invalid_input_file"),
        ("rows.npy", npy_bytes(iris_rows(100))[:-10], 400, "invalid_input_file"),
        ("rows.jsonl", b'{"X": [1, 2, 3]}\n', 400, "invalid_shape"),
        ("rows.xlsx", b"1,2,3,4\n", 400, "unsupported_format"),
    ],
)
def test_bad_input_is_still_a_4xx_and_stores_nothing(
    own_bucket, jobs_client, make_model, moto, filename, content, status, code
):
    iris = make_model(iris_model())
    response = create_file(jobs_client, iris, content, filename)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not Job.objects.exists()
    assert moto.client().list_objects_v2(Bucket=own_bucket, Prefix=f"{PREFIX}/")["KeyCount"] == 0


def test_oversize_input_is_413_and_stores_nothing(own_bucket, jobs_client, make_model, moto, settings):
    settings.JOB_MAX_INPUT_FILE_MB = 1
    settings.JOB_MAX_INPUT_FILE_BYTES = 1024 * 1024
    iris = make_model(iris_model())
    response = create_file(jobs_client, iris, jsonl_bytes(iris_rows(40_000)), "rows.jsonl")
    assert (response.status_code, response.json()["code"]) == (413, "input_file_too_large")
    assert moto.client().list_objects_v2(Bucket=own_bucket, Prefix=f"{PREFIX}/")["KeyCount"] == 0


# --- the bucket down --------------------------------------------------------------------------


@pytest.fixture
def doomed(settings, tmp_path):
    """A server of its own, stopped by the test."""
    server = MotoServer(tmp_path / "doomed.log").start()
    bucket = server.new_bucket()
    use_bucket(settings, tmp_path, server, bucket)
    yield server, bucket
    server.stop()


def assert_no_details(response, server: MotoServer, bucket: str) -> None:
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "storage_unavailable"
    text = response.content.decode()
    for secret in (server.endpoint, f":{server.port}", "127.0.0.1", bucket, f"{PREFIX}/", "input.", "output-"):
        assert secret not in text


def test_bucket_down_is_a_503_without_details_and_leaves_nothing(doomed, jobs_client, make_model, settings):
    server, bucket = doomed
    iris = make_model(iris_model())
    rows = iris_rows(20)
    done = created(create_file(jobs_client, iris, jsonl_bytes(rows), "rows.jsonl"))
    assert wait_finished(jobs_client, done["id"]).status_code == 200
    server.stop()

    response = create_file(jobs_client, iris, jsonl_bytes(rows), "rows.jsonl")
    assert_no_details(response, server, bucket)
    assert Job.objects.count() == 1  # no job for the refused upload
    assert list((settings.JOB_STORAGE_PATH / "tmp").iterdir()) == []  # nor its temporary file
    for file_format in ("jsonl", "csv"):
        assert_no_details(jobs_client.get(result_url(done["id"], format=file_format)), server, bucket)
    # What needs no file still answers; a delete goes through and leaves the objects to the retention.
    assert jobs_client.get(result_url(done["id"])).status_code == 200
    assert jobs_client.delete(job_url(done["id"])).status_code == 204


@not_transactional
def test_worker_that_cannot_reach_the_bucket_retries_then_fails_the_job(doomed, make_model, settings):
    server, _ = doomed
    settings.JOB_MAX_ATTEMPTS = 2
    iris = make_model(iris_model())
    job = services.job_create(model=iris, input_file=uploaded_input(jsonl_bytes(iris_rows(20))))
    Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED)
    server.stop()

    for attempt in (1, 2):
        claimed = services.job_claim(job_id=job.pk, worker="w1")
        with pytest.raises(StorageUnavailable) as raised:
            services.job_execute(job=claimed)
        delay = services.job_record_failure(job=claimed, exc=raised.value)
        job.refresh_from_db()
        if attempt == 1:  # transient: queued again after the backoff, as for a lost database
            assert delay is not None
            assert (job.status, job.attempts) == (Job.Status.QUEUED, 1)
            assert job.error_message.startswith("Attempt 1 failed (StorageUnavailable")
    assert (job.status, job.error_code) == (Job.Status.FAILED, "storage_unavailable")
    for secret in (server.endpoint, f":{server.port}", f"{PREFIX}/"):
        assert secret not in job.error_message
