"""Models whose memory use is set by input values (issue 15): a request asking one for gigabytes
is refused with 422 ``resource_limit_exceeded`` on every door (/api/v1 predict on both paths,
/v2 infer, a job), the allocation fails in the model's capped child process (never in the
serving process: the test process here), the next request is answered normally, and the same
model on small inputs gives ONNX Runtime's own answer."""

from __future__ import annotations

import os

import numpy as np
import orjson
import pytest
from django.test import Client

from inference.sessions import get_pool, resident_bytes
from registry.models import MLModel
from tests.inference.factories import reference_run
from tests.inference.memory_models import (
    BOMB_SHAPE,
    make_constant_of_shape_model,
    make_expand_model,
    make_tile_model,
)
from tests.jobs.api import create_inline, created, job_url, wait_finished
from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import IRIS_ROW, SENDERS, predict_path

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT_MB = 256
# Far below the 40 GB a bomb asks for, far above what one small run costs (the serving process
# must not have taken the bomb's allocation, nor kept anything of it).
GROWTH_BOUND = 100 * 2**20


@pytest.fixture(autouse=True)
def _low_limit(settings):
    settings.MODEL_MEMORY_LIMIT_MB = LIMIT_MB
    yield
    get_pool().clear()  # stop the children this test started


@pytest.fixture
def key(make_key):
    return make_key("read", "predict", name="caller")[1]


def loaded_entry(model_id: str):
    model = MLModel.objects.get(pk=model_id)
    return get_pool().get(model)


@pytest.mark.parametrize("path", SENDERS)
def test_predict_that_asks_for_gigabytes_is_refused_and_the_next_is_served(ready_model, key, path):
    send = SENDERS[path]
    model = ready_model(make_constant_of_shape_model(), name="filler")
    assert model["value_dependent_memory"] is True
    small = {"shape": [2, 3]}

    first = send(predict_path(model["id"]), orjson.dumps({"input_data": small}), key=key)
    assert first.status == 200, first.content[:500]
    expected = reference_run(make_constant_of_shape_model(), {"shape": np.array([2, 3], dtype=np.int64)})
    assert first.json()["output_data"]["Y"] == expected["Y"].tolist()
    entry = loaded_entry(model["id"])
    assert entry.isolated is not None and entry.isolated.pid != os.getpid()
    child = entry.isolated.pid

    before = resident_bytes()
    bomb = send(predict_path(model["id"]), orjson.dumps({"input_data": {"shape": BOMB_SHAPE}}), key=key)
    assert (bomb.status, bomb.code) == (422, "resource_limit_exceeded"), bomb.content[:500]
    assert f"{LIMIT_MB} MB" in bomb.json()["detail"]
    assert resident_bytes() - before < GROWTH_BOUND

    again = send(predict_path(model["id"]), orjson.dumps({"input_data": small, "skip_cache": True}), key=key)
    assert again.status == 200, again.content[:500]
    assert again.json()["output_data"]["Y"] == expected["Y"].tolist()
    # The same child answered: a refused allocation costs no restart, and left nothing behind.
    assert entry.isolated.pid == child
    assert entry.isolated.resident_bytes() < GROWTH_BOUND


def test_v2_infer_that_asks_for_gigabytes_is_refused_and_the_next_is_served(ready_model, key):
    ready_model(make_expand_model(), name="expander")
    web = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    one = {"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [7.0]}

    def infer(shape):
        body = orjson.dumps({"inputs": [one, {"name": "shape", "datatype": "INT64", "shape": [2], "data": shape}]})
        return web.generic("POST", "/v2/models/expander/infer", body, content_type="")

    bomb = infer(BOMB_SHAPE)
    assert (bomb.status_code, bomb.json()["code"]) == (422, "resource_limit_exceeded"), bomb.content[:500]
    small = infer([2, 2])
    assert small.status_code == 200, small.content[:500]
    assert small.json()["outputs"][0]["shape"] == [2, 2]
    assert small.json()["outputs"][0]["data"] == [7.0] * 4


def test_job_that_asks_for_gigabytes_fails_with_the_code_and_the_next_completes(ready_model, jobs_client):
    model = ready_model(make_tile_model(), name="tiler")
    # 800 MB: under ONNX Runtime's own 4 GB cap on Tile, over the model's limit.
    bomb = created(create_inline(jobs_client, model["id"], {"X": [[3.0]], "repeats": [20_000, 10_000]}))
    refused = wait_finished(jobs_client, bomb["id"])
    assert (refused.status_code, refused.json()["code"]) == (409, "job_failed")
    assert refused.json()["error_code"] == "resource_limit_exceeded"
    assert jobs_client.get(job_url(bomb["id"])).json()["status"] == "failed"

    good = created(create_inline(jobs_client, model["id"], {"X": [[3.0]], "repeats": [1, 3]}))
    done = wait_finished(jobs_client, good["id"])
    assert done.status_code == 200, done.content[:500]
    assert done.json()["output_data"]["Y"] == [[3.0, 3.0, 3.0]]


def test_a_killed_child_is_replaced_on_the_next_request(ready_model, key):
    model = ready_model(make_constant_of_shape_model(), name="filler")
    send = SENDERS["django"]
    body = orjson.dumps({"input_data": {"shape": [1, 2]}, "skip_cache": True})
    assert send(predict_path(model["id"]), body, key=key).status == 200
    isolated = loaded_entry(model["id"]).isolated
    os.kill(isolated.pid, 9)  # as the kernel's OOM killer would
    assert send(predict_path(model["id"]), body, key=key).status == 200
    assert isolated.starts == 2


def test_unloading_a_model_stops_its_child(ready_model, key):
    model = ready_model(make_constant_of_shape_model(), name="filler")
    isolated = loaded_entry(model["id"]).isolated
    process = isolated._process
    assert get_pool().evict(MLModel.objects.get(pk=model["id"]).file_sha256)
    assert process.wait(timeout=30) is not None


def test_an_ordinary_model_runs_in_process_and_isolated_alike(ready_model, key, settings):
    model = ready_model(make_iris_model(zipmap=True), name="iris")
    assert model["value_dependent_memory"] is False
    send = SENDERS["django"]
    body = orjson.dumps({"input_data": IRIS_ROW, "skip_cache": True})
    in_process = send(predict_path(model["id"]), body, key=key)
    assert in_process.status == 200
    assert loaded_entry(model["id"]).isolated is None

    settings.MODEL_ISOLATION = "all"
    get_pool().clear()
    isolated = send(predict_path(model["id"]), body, key=key)
    assert isolated.status == 200
    assert loaded_entry(model["id"]).isolated is not None
    assert isolated.json()["output_data"] == in_process.json()["output_data"]
