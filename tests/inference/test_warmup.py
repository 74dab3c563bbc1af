"""Warm-up: a model's warmup_count runs on its warm-up data when each of its sessions loads, counted
in /metrics (modelforge_warmup_runs_total); /v2 model ready answers 503 until they are done in
this process, and a request arriving meanwhile waits for them instead of racing."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from inference.sessions import get_pool
from registry.models import MLModel
from tests.inference.factories import make_int64_model, make_scaled_model, make_string_model
from tests.inference.slow_models import make_sleepy_model
from tests.inference.test_metrics import scrape, value
from tests.v2.test_views import client

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(make_key):
    return client(make_key("predict")[1])


def warmup_runs(read_client, name: str) -> float:
    return value(scrape(read_client), "modelforge_warmup_runs_total", model=name, version="1.0.0")


def set_warmup(manage_client, model: dict, **warmup) -> dict:
    response = manage_client.patch(f"/api/v1/models/{model['id']}", warmup, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.mark.parametrize(("count", "sessions"), [(3, 1), (2, 2), (0, 1)])
def test_a_model_runs_its_warmup_count_on_each_session_before_it_is_ready(
    ready_model, manage_client, read_client, web, count, sessions
):
    model = ready_model(make_scaled_model(2.0), name="scaled")
    set_warmup(manage_client, model, warmup={"count": count}, runtime={"sessions_per_process": sessions})
    before = warmup_runs(read_client, "scaled")
    assert web.get("/v2/models/scaled/ready").status_code == 200  # loads and warms it up, then answers
    assert warmup_runs(read_client, "scaled") - before == count * sessions
    # Loaded once: asking again runs nothing more.
    assert web.get("/v2/models/scaled/versions/1.0.0/ready").status_code == 200
    assert warmup_runs(read_client, "scaled") - before == count * sessions


@pytest.mark.parametrize(
    ("factory", "data", "sample"),
    [
        (make_int64_model, "random", None),
        (make_string_model, "random", None),
        (make_scaled_model, "sample", {"X": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}),
    ],
    ids=["random-int64", "random-strings", "sample"],
)
def test_random_and_sample_warmups_run(ready_model, manage_client, read_client, web, factory, data, sample):
    model = ready_model(factory(2.0) if factory is make_scaled_model else factory(), name="warm")
    set_warmup(manage_client, model, warmup={"count": 2, "data": data, "sample": sample})
    before = warmup_runs(read_client, "warm")
    assert web.get("/v2/models/warm/ready").status_code == 200
    assert warmup_runs(read_client, "warm") - before == 2


def test_a_settings_change_warms_up_the_new_sessions(ready_model, manage_client, read_client, web):
    model = ready_model(make_scaled_model(2.0), name="scaled")
    set_warmup(manage_client, model, warmup={"count": 2})
    assert web.get("/v2/models/scaled/ready").status_code == 200
    before = warmup_runs(read_client, "scaled")
    set_warmup(manage_client, model, runtime={"intra_op_threads": 2})
    assert web.get("/v2/models/scaled/ready").status_code == 200
    assert warmup_runs(read_client, "scaled") - before == 2


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the state was not reached in time"
        time.sleep(0.005)


def test_not_ready_during_warmup_and_a_request_then_waits_for_it(ready_model, manage_client, read_client, web):
    # Zeros cost the sleepy model nothing; its warm-up sample makes each warm-up run spin a while.
    model = ready_model(make_sleepy_model(8_000), name="sleepy")
    set_warmup(manage_client, model, warmup={"count": 3, "data": "sample", "sample": {"X": [[1.0, 1.0, 1.0, 1.0]]}})
    row = MLModel.objects.get(pk=model["id"])
    pool = get_pool()
    before = warmup_runs(read_client, "sleepy")

    loader = threading.Thread(target=pool.get, args=(row,), daemon=True)
    loader.start()
    wait_for(lambda: pool.state(row) != "unloaded")
    assert pool.state(row) == "loading"
    not_ready = web.get("/v2/models/sleepy/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["code"] == "model_loading"
    assert not_ready["Retry-After"] == "1"

    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]})
    answer = web.generic("POST", "/v2/models/sleepy/infer", body, content_type="")
    assert answer.status_code == 200, answer.content
    # The request was answered by the warmed-up session: every warm-up run was done by then.
    assert warmup_runs(read_client, "sleepy") - before == 3
    loader.join()
    assert web.get("/v2/models/sleepy/ready").status_code == 200
