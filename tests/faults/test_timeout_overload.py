"""Inference slower than the timeout, more concurrent runs than a model may have, and more
requests than a key's rate (REFERENCE §4, §5), on /api/v1 predict through Django and the fast
path and on /v2 infer: the exact status, code and Retry-After; the admitted request is
answered, the server answers the next one, and the history holds exactly the admitted ones."""

from __future__ import annotations

import threading
import time
from uuid import UUID

import orjson
import pytest
from django.db import connection

from inference.batching import batchers
from inference.limits import in_flight
from tests.inference.slow_models import make_sleepy_model
from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import SENDERS, assert_history_is, predict_path

SLOW_ROW = [[1.0, 1.0, 1.0, 1.0]]  # minutes of work for the sleepy model unless stopped
SECOND_ROW = [[0.05, 0.05, 0.05, 0.05]]  # about a second
QUICK_ROW = [[0.0, 0.0, 0.0, 0.0]]  # no work at all


def predict_request(model: dict, rows) -> tuple[str, bytes]:
    return predict_path(model["id"]), orjson.dumps({"input_data": {"X": rows}, "skip_cache": True})


def v2_request(model: dict, rows) -> tuple[str, bytes]:
    flat = [value for row in rows for value in row]
    body = {
        "inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}],
        "parameters": {"skip_cache": True},
    }
    return f"/v2/models/{model['name']}/infer", orjson.dumps(body)


# (route, sender): /api/v1 predict and /v2 infer, each through Django and the fast path.
ROUTES = [
    pytest.param(build, path, id=f"{api}-{path}")
    for api, build in (("predict", predict_request), ("v2", v2_request))
    for path in sorted(SENDERS)
]


@pytest.fixture
def key(make_key):
    return make_key("read", "predict", name="caller")[1]


@pytest.mark.django_db
@pytest.mark.parametrize(("build", "path"), ROUTES)
def test_inference_slower_than_the_timeout_is_504(ready_model, key, settings, build, path):
    settings.INFERENCE_TIMEOUT_SECONDS = 0.3
    sleepy = ready_model(make_sleepy_model(), name="sleepy")
    send = SENDERS[path]
    reply = send(*build(sleepy, SLOW_ROW), key=key)
    assert (reply.status, reply.code) == (504, "inference_timeout"), reply.content[:300]
    assert_history_is(sleepy["id"], 0)
    quick = send(*build(sleepy, QUICK_ROW), key=key)
    assert quick.status == 200, quick.content[:300]
    assert_history_is(sleepy["id"], 1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("build", "path"), ROUTES)
def test_more_concurrent_runs_than_allowed_is_503_with_retry_after(ready_model, key, settings, build, path):
    settings.MAX_INFLIGHT_PER_MODEL = 1
    settings.INFERENCE_TIMEOUT_SECONDS = 60
    sleepy = ready_model(make_sleepy_model(), name="sleepy")
    send = SENDERS[path]
    admitted = {}

    def slow_request():
        try:
            admitted["reply"] = send(*build(sleepy, SECOND_ROW), key=key)
        finally:
            connection.close()

    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 30
    while in_flight.running(UUID(sleepy["id"])) == 0:
        assert worker.is_alive() and time.monotonic() < deadline, admitted
        time.sleep(0.01)
    refused = send(*build(sleepy, QUICK_ROW), key=key)
    worker.join(60)
    assert (refused.status, refused.code) == (503, "model_overloaded"), refused.content[:300]
    assert refused.headers["Retry-After"] == "1"
    assert admitted["reply"].status == 200  # the admitted request was answered
    assert send(*build(sleepy, QUICK_ROW), key=key).status == 200
    assert_history_is(sleepy["id"], 2)


@pytest.mark.django_db
@pytest.mark.parametrize(("build", "path"), ROUTES)
def test_requests_over_the_keys_rate_are_429_with_retry_after(ready_model, make_key, settings, build, path):
    iris = ready_model(make_iris_model(zipmap=False), name="iris")
    settings.THROTTLE_RATES = {"predict": "2/min", "upload": "", "jobs": ""}
    key, other = make_key("predict", name="busy")[1], make_key("predict", name="calm")[1]
    send = SENDERS[path]
    row = [[5.1, 3.5, 1.4, 0.2]]
    assert [send(*build(iris, row), key=key).status for _ in range(2)] == [200, 200]
    refused = send(*build(iris, row), key=key)
    assert (refused.status, refused.code) == (429, "throttled"), refused.content[:300]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert send(*build(iris, row), key=other).status == 200  # another key has its own budget
    assert_history_is(iris["id"], 3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("build", "path"), ROUTES)
def test_more_requests_than_the_batching_queue_holds_is_503_with_retry_after(
    ready_model, manage_client, key, settings, build, path
):
    settings.INFERENCE_TIMEOUT_SECONDS = 60
    sleepy = ready_model(make_sleepy_model(), name="sleepy")
    # No queue timeout: this test is about the full queue, and on a CPU-starved machine the first
    # request's "second" of work has taken longer than the default 10 s the second one may wait.
    batching = {
        "enabled": True,
        "max_batch_size": 1,
        "max_queue_delay_microseconds": 0,
        "max_queue_size": 1,
        "default_timeout_microseconds": 0,
    }
    patched = manage_client.patch(f"/api/v1/models/{sleepy['id']}", {"batching": batching}, format="json")
    assert patched.status_code == 200, patched.json()
    send = SENDERS[path]
    admitted: list = []

    def slow_request():
        try:
            admitted.append(send(*build(sleepy, SECOND_ROW), key=key))
        finally:
            connection.close()

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 30
        while not any(condition(batcher) for batcher in list(batchers._batchers.values())):
            assert time.monotonic() < deadline, admitted
            time.sleep(0.005)

    workers = [threading.Thread(target=slow_request) for _ in range(2)]
    workers[0].start()
    wait_for(lambda batcher: batcher.busy)  # the first request is in the model
    workers[1].start()
    wait_for(lambda batcher: batcher.waiting() == 1)  # the second one waits: the queue is full
    refused = send(*build(sleepy, QUICK_ROW), key=key)
    for worker in workers:
        worker.join(60)
    assert (refused.status, refused.code) == (503, "queue_full"), refused.content[:300]
    assert refused.headers["Retry-After"] == "1"
    assert [reply.status for reply in admitted] == [200, 200], [reply.content[:300] for reply in admitted]
    assert send(*build(sleepy, QUICK_ROW), key=key).status == 200
    assert_history_is(sleepy["id"], 3)
