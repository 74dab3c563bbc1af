"""A model file changed on disk after upload (REFERENCE §5) is refused, whether its session was
loaded or not, on both predict paths, /v2 and jobs; other models keep answering, and the
tampered file is never served, not even from the prediction cache.

The server that finds it answers 503 `model_file_unavailable` and leaves the model's status
alone (its view of the storage may be the wrong one); a confirmation read from the storage
itself (the worker's task) marks it `error`, and from then on it is a model that is not ready."""

from __future__ import annotations

import time

import orjson
import pytest

from inference.sessions import get_pool
from jobs.models import Job
from registry.models import MLModel
from registry.storage import ModelStore
from registry.tasks import confirm_model_file
from tests.inference.factories import make_int64_model, make_scaled_model
from tests.jobs.api import create_inline, created, wait_finished
from tests.security.battery import SENDERS, assert_history_is, assert_still_serves, predict_path

pytestmark = pytest.mark.django_db

X = {"X": [[1.0, 2.0, 3.0]]}


@pytest.fixture
def key(make_key):
    return make_key("read", "predict", name="caller")[1]


@pytest.mark.parametrize("path", sorted(SENDERS))
def test_a_file_changed_on_disk_is_refused_on_every_route(ready_model, key, settings, path):
    settings.SESSION_RECHECK_SECONDS = 0
    tampered = ready_model(make_scaled_model(2.0), name="scaler")
    other = ready_model(make_int64_model(), name="ints")
    send = SENDERS[path]
    assert_still_serves(send, tampered["id"], key, row=X)  # loaded, and its answer cached

    ModelStore().path_for(tampered["file_sha256"]).write_bytes(make_scaled_model(1000.0))
    get_pool().clear()  # a new process, or the session evicted meanwhile

    # The first request finds the mismatch (the cached answer is not served either): 503, the
    # model unchanged until the confirmation; from then on it is a model that is not ready,
    # naming the reason.
    first = send(predict_path(tampered["id"]), orjson.dumps({"input_data": X}), key=key)
    assert (first.status, first.code) == (503, "model_file_unavailable"), first.content[:300]
    assert MLModel.objects.get(pk=tampered["id"]).status == MLModel.Status.READY
    assert confirm_model_file(tampered["id"], tampered["file_sha256"]) == "checksum_mismatch"
    again = send(predict_path(tampered["id"]), orjson.dumps({"input_data": X, "skip_cache": True}), key=key)
    assert (again.status, again.code) == (409, "model_not_ready"), again.content[:300]
    assert "checksum_mismatch" in again.json()["detail"]
    v2 = send(
        "/v2/models/scaler/infer",
        orjson.dumps({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        key=key,
    )
    assert (v2.status, v2.code) == (503, "model_not_ready"), v2.content[:300]
    assert tampered["file_sha256"] not in get_pool().loaded()
    assert_history_is(tampered["id"], 1)

    assert_still_serves(send, other["id"], key, row={"X": [[3, 4]]})


@pytest.mark.django_db(transaction=True)  # the embedded runner's threads must see the rows
def test_a_job_on_a_changed_file_is_retried_and_fails_once_the_model_is_marked(ready_model, jobs_client, key):
    tampered = ready_model(make_scaled_model(2.0), name="scaler")
    other = ready_model(make_int64_model(), name="ints")
    ModelStore().path_for(tampered["file_sha256"]).write_bytes(make_scaled_model(1000.0))
    job = created(create_inline(jobs_client, tampered["id"], X))
    # The confirmation runs on the embedded runner's thread (no broker here, as in `make run`).
    deadline = time.monotonic() + 60
    while MLModel.objects.get(pk=tampered["id"]).status == MLModel.Status.READY:
        assert time.monotonic() < deadline, "the model was not marked by the confirmation"
        time.sleep(0.05)
    marked = MLModel.objects.get(pk=tampered["id"])
    assert (marked.status, marked.error_code) == (MLModel.Status.ERROR, "checksum_mismatch")
    # The run that could not read the file was no verdict on the job: it was tried again, and
    # failed for good only as the model's status says (or when its attempts ran out first).
    result = wait_finished(jobs_client, job["id"], timeout=60)
    assert (result.status_code, result.json()["code"]) == (409, "job_failed"), result.content[:300]
    failed = jobs_client.get(f"/api/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert Job.objects.get(pk=job["id"]).attempts >= 2
    if failed["error_code"] == "model_not_ready":
        assert "checksum_mismatch" in failed["error_message"], failed
    else:
        assert failed["error_code"] == "model_file_unavailable", failed
    refused = create_inline(jobs_client, tampered["id"], X)
    assert (refused.status_code, refused.json()["code"]) == (409, "model_not_ready"), refused.content[:300]
    done = created(create_inline(jobs_client, other["id"], {"X": [[3, 4]]}))
    assert wait_finished(jobs_client, done["id"], timeout=30).status_code == 200
