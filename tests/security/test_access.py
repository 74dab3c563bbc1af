"""Object-level access and mass assignment (REFERENCE §4, §5): another client's job or
prediction is a 404 exactly like an unknown id, and read-only fields (status, sha256, owner)
cannot be written through any route; the refused request changes nothing."""

from __future__ import annotations

import orjson
import pytest

from inference.history import history
from jobs.models import Job
from registry.models import MLModel
from tests.jobs.api import JOBS, create_inline, created, job_url, result_url
from tests.registry.onnx_factories import make_iris_model
from tests.security.battery import IRIS_ROW, assert_still_serves, model_snapshot, via_fastpath

pytestmark = pytest.mark.django_db

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def iris(ready_model):
    return ready_model(make_iris_model(zipmap=False), name="iris")


def test_another_clients_job_is_404_like_an_unknown_one(iris, jobs_client, other_client):
    theirs = created(create_inline(other_client, iris["id"], IRIS_ROW))
    # Finished by hand: the job's run is not what this test is about (tests/faults/ runs them).
    Job.objects.filter(pk=theirs["id"]).update(status=Job.Status.COMPLETED, output_data={"label": [0]})
    for job_id in (theirs["id"], UNKNOWN):
        for method, url in [
            ("get", job_url(job_id)),
            ("get", result_url(job_id)),
            ("get", result_url(job_id, format="jsonl")),
            ("post", f"{job_url(job_id)}/cancel"),
            ("delete", job_url(job_id)),
        ]:
            response = getattr(jobs_client, method)(url)
            assert (response.status_code, response.json()["code"]) == (404, "job_not_found"), (method, url)
    assert jobs_client.get(JOBS).json()["results"] == []
    # Nothing lost: their job is intact and still theirs.
    assert Job.objects.get(pk=theirs["id"]).status == Job.Status.COMPLETED
    assert other_client.get(result_url(theirs["id"])).status_code == 200


def test_another_clients_prediction_is_404_like_an_unknown_one(iris, client_for):
    mine, theirs = client_for("predict", name="mine"), client_for("predict", name="theirs")
    key = theirs._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    prediction = assert_still_serves(via_fastpath, iris["id"], key)
    history.flush()
    for prediction_id in (prediction["id"], UNKNOWN):
        response = mine.get(f"/api/v1/predictions/{prediction_id}")
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert mine.get(f"/api/v1/models/{iris['id']}/predictions").json()["results"] == []
    assert theirs.get(f"/api/v1/predictions/{prediction['id']}").status_code == 200


def test_unknown_model_id_is_404_everywhere(read_client, manage_client, client_for):
    predictor = client_for("predict")
    for client, method, url in [
        (read_client, "get", f"/api/v1/models/{UNKNOWN}"),
        (manage_client, "patch", f"/api/v1/models/{UNKNOWN}"),
        (manage_client, "post", f"/api/v1/models/{UNKNOWN}/archive"),
        (manage_client, "delete", f"/api/v1/models/{UNKNOWN}"),
        (predictor, "post", f"/api/v1/models/{UNKNOWN}/predict"),
    ]:
        response = getattr(client, method)(url, {}, format="json")
        assert (response.status_code, response.json()["code"]) == (404, "model_not_found"), (method, url)
    # Not an id at all: no route matches, and the API's 404 is JSON too.
    response = read_client.get("/api/v1/models/not-a-uuid")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    "field",
    [
        {"status": "ready"},
        {"file_sha256": "0" * 64},
        {"created_by": "key:someone-else"},
        {"error_code": ""},
        {"input_schema": []},
        {"name": "renamed"},
        {"version": "9.9.9"},
    ],
    ids=lambda field: next(iter(field)),
)
def test_patch_of_a_read_only_field_is_400_and_changes_nothing(iris, manage_client, field):
    before = model_snapshot()
    response = manage_client.patch(f"/api/v1/models/{iris['id']}", field, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "read_only_field"
    assert list(response.json()["errors"]) == list(field)
    assert model_snapshot() == before
    assert manage_client.get(f"/api/v1/models/{iris['id']}").json()["status"] == "ready"


def test_create_with_a_read_only_field_is_400_and_creates_nothing(manage_client):
    body = {"name": "m", "version": "1.0.0", "status": "ready", "file_sha256": "0" * 64}
    response = manage_client.post("/api/v1/models", body, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert set(response.json()["errors"]) == {"status", "file_sha256"}
    assert not MLModel.objects.exists()


@pytest.mark.parametrize("field", [{"status": "completed"}, {"owner": "someone"}, {"output_data": {"label": [1]}}])
def test_job_create_with_a_read_only_field_is_400_and_creates_nothing(iris, jobs_client, field):
    response = create_inline(jobs_client, iris["id"], IRIS_ROW, **field)
    assert response.status_code == 400
    assert response.json()["code"] == "read_only_field"
    assert not Job.objects.exists()
    assert created(create_inline(jobs_client, iris["id"], IRIS_ROW))["status"] == "pending"


@pytest.mark.parametrize("field", [{"status": "ready"}, {"cached": True}, {"model_id": UNKNOWN}])
def test_predict_with_a_field_it_does_not_take_is_400(iris, make_key, field):
    key = make_key("predict")[1]
    body = orjson.dumps({"input_data": IRIS_ROW, **field})
    reply = via_fastpath(f"/api/v1/models/{iris['id']}/predict", body, key=key)
    assert (reply.status, reply.code) == (400, "unknown_field")
    assert_still_serves(via_fastpath, iris["id"], key)
