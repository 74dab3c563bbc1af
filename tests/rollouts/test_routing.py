"""Requests through an alias with a rollout: the candidate's share, sticky keys, every door."""

from __future__ import annotations

import orjson
import pytest
from django.test import Client

from jobs.models import Job
from tests.inference.api import MODELS
from tests.rollouts.conftest import BODY, NAME, ROW

pytestmark = pytest.mark.django_db

REQUESTS = 10_000


def test_weight_10_sends_10_percent_of_10000_requests_to_the_candidate(versions, start, send):
    start(candidate_version="1.1.0", weight=10)
    answered = [send(f"client-{index}")[1] for index in range(REQUESTS)]
    share = answered.count("1.1.0") / REQUESTS
    assert 0.085 <= share <= 0.115, share
    assert set(answered) == {"1.0.0", "1.1.0"}


def test_without_a_routing_key_the_api_key_keeps_a_caller_on_one_version(versions, start, send, make_key):
    start(candidate_version="1.1.0", weight=50)
    seen = {}
    for _ in range(40):
        _key, raw = make_key("predict")
        answers = {send(key=raw)[1] for _ in range(3)}
        assert len(answers) == 1  # the same key, the same version
        seen[raw] = answers.pop()
    assert set(seen.values()) == {"1.0.0", "1.1.0"}  # and the keys are spread


def test_sticky_keys_never_switch_at_a_fixed_weight_and_raising_it_only_moves_primary_keys(versions, start, send):
    start(candidate_version="1.1.0", weight=10)
    keys = [f"user-{index}" for index in range(2000)]
    first = {key: send(key)[1] for key in keys}
    again = {key: send(key)[1] for key in keys}
    assert first == again

    start(weight=30)
    raised = {key: send(key)[1] for key in keys}
    moved = [key for key in keys if first[key] != raised[key]]
    assert moved, "raising the weight moves some keys"
    assert all(first[key] == "1.0.0" and raised[key] == "1.1.0" for key in moved)
    assert 0.27 <= list(raised.values()).count("1.1.0") / len(keys) <= 0.33


def test_the_answer_says_which_version_answered_in_the_body_and_a_header(versions, start, send):
    start(candidate_version="1.1.0", weight=100)
    status, header, body = send("anyone")
    assert (status, header, body["model_version"]) == (200, "1.1.0", "1.1.0")
    assert body["output_data"]["Y"] == [[2.0, 4.0, 6.0]]  # the candidate's outputs
    start(weight=0)
    status, header, body = send("anyone")
    assert (header, body["model_version"], body["output_data"]["Y"]) == ("1.0.0", "1.0.0", [[1.0, 2.0, 3.0]])


def test_a_pinned_version_is_never_routed(versions, start, client_for):
    predict_client = client_for("predict")
    start(candidate_version="1.1.0", weight=100)
    response = predict_client.post(
        f"{MODELS}/by-name/{NAME}/predict?version=1.0.0", BODY, content_type="application/json"
    )
    assert response.json()["model_version"] == "1.0.0"
    assert response.headers["X-Model-Version"] == "1.0.0"


def test_every_http_door_routes_through_the_alias(versions, start, make_key):
    start(candidate_version="1.1.0", weight=100)
    _key, raw = make_key("predict")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    v1 = client.post(f"{MODELS}/by-name/{NAME}/predict", BODY, content_type="application/json")
    assert (v1.status_code, v1.headers["X-Model-Version"], v1.json()["model_version"]) == (200, "1.1.0", "1.1.0")
    v2_body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    for path in (f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/versions/production/infer"):
        v2 = client.post(path, v2_body, content_type="application/json")
        assert v2.status_code == 200, v2.content
        assert (v2.headers["X-Model-Version"], v2.json()["model_version"]) == ("1.1.0", "1.1.0")
    pinned = client.post(f"/v2/models/{NAME}/versions/1.0.0/infer", v2_body, content_type="application/json")
    assert pinned.json()["model_version"] == "1.0.0"


def test_the_history_records_the_version_that_answered(versions, start, send):
    from inference.history import history
    from inference.models import Prediction

    start(candidate_version="1.1.0", weight=100)
    _status, _header, body = send("someone")
    history.flush()
    assert Prediction.objects.get(pk=body["id"]).model_version == "1.1.0"


def test_a_job_by_alias_is_routed_with_its_key_and_records_the_version(versions, start, client_for):
    start(candidate_version="1.1.0", weight=100)
    client = client_for("predict", "read")
    response = client.post("/api/v1/jobs", {"model_name": NAME, "input_data": ROW}, format="json")
    assert response.status_code in (201, 202), response.json()
    assert Job.objects.get(pk=response.json()["id"]).model.version == "1.1.0"
    pinned = client.post("/api/v1/jobs", {"model_name": NAME, "version": "1.0.0", "input_data": ROW}, format="json")
    assert Job.objects.get(pk=pinned.json()["id"]).model.version == "1.0.0"
