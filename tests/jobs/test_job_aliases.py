"""Jobs created by model name resolve like predict: `alias`, a version string naming an alias,
and the production alias as the default version."""

from __future__ import annotations

import orjson
import pytest

from jobs.models import Job
from registry import services
from tests.inference.factories import make_scaled_model
from tests.jobs.api import JOBS, created, wait_finished

ROW = [[1.0, 2.0, 3.0]]
FACTORS = {"1.0.0": 1.0, "1.1.0": 2.0, "2.0.0": 3.0}


@pytest.fixture
def iris(make_model):
    return {
        version: make_model(make_scaled_model(factor), name="iris", version=version)
        for version, factor in FACTORS.items()
    }


def create(client, **fields):
    body = {"model_name": "iris", "input_data": {"X": ROW}, **fields}
    return client.generic("POST", JOBS, orjson.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_a_job_by_name_uses_the_production_alias_else_the_latest(jobs_client, iris):
    assert created(create(jobs_client))["model_version"] == "2.0.0"
    services.alias_set(name="iris", alias="production", version="1.0.0")
    job = created(create(jobs_client))
    assert (job["model_version"], job["model_id"]) == ("1.0.0", str(iris["1.0.0"].pk))
    assert created(create(jobs_client, version="1.1.0"))["model_version"] == "1.1.0"


@pytest.mark.django_db
def test_a_job_through_a_named_alias(jobs_client, iris):
    services.alias_set(name="iris", alias="staging", version="1.1.0")
    assert created(create(jobs_client, alias="staging"))["model_version"] == "1.1.0"
    assert created(create(jobs_client, version="staging"))["model_version"] == "1.1.0"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"alias": "staging", "version": "1.0.0"}, 400, "conflicting_parameters"),
        ({"alias": "canary"}, 404, "alias_not_found"),
        ({"alias": "1.0.0"}, 400, "alias_is_version"),
        ({"alias": "bad name"}, 400, "invalid_alias"),
        ({"model_name": "nope", "alias": "staging"}, 404, "model_not_found"),
    ],
)
def test_bad_alias_jobs_are_refused(jobs_client, iris, fields, status, code):
    services.alias_set(name="iris", alias="staging", version="1.1.0")
    response = create(jobs_client, **fields)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_alias_goes_with_model_name(jobs_client, iris):
    body = {"model_id": str(iris["1.0.0"].pk), "alias": "staging", "input_data": {"X": ROW}}
    response = jobs_client.generic("POST", JOBS, orjson.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert "alias goes with model_name" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_the_job_runs_the_aliased_version(jobs_client, iris):
    services.alias_set(name="iris", alias="production", version="1.1.0")
    job = created(create(jobs_client))
    services.alias_set(name="iris", alias="production", version="2.0.0")  # the job keeps its version
    response = wait_finished(jobs_client, job["id"])
    assert response.status_code == 200, response.json()
    assert response.json()["output_data"]["Y"] == [[2.0, 4.0, 6.0]]
    assert response.json()["model_version"] == "1.1.0"
