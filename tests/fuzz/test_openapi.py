"""Schemathesis against the OpenAPI schema the server serves (/api/v1/schema), through the WSGI
application as production runs it (the predict fast path in front of Django): for every
/api/v1 operation, generated requests with a key holding every scope never get a 500 and
never get a response the schema does not describe (status, headers, body).

The schema is generated at collection time by drf-spectacular, exactly as the schema view
does (a test checks that the two are the same document); the requests go to the WSGI app.
Bounded and deterministic (a fixed number of examples per operation, derandomized) so that it
takes well under two minutes in CI."""

from __future__ import annotations

import zlib

import orjson
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from inference.fastpath import PredictFastPath
from tests.jobs.factories import iris_model

EXAMPLES_PER_OPERATION = 10

pytestmark = pytest.mark.django_db


def served_document() -> dict:
    return orjson.loads(orjson.dumps(SchemaGenerator().get_schema(request=None, public=True)))


schema = schemathesis.openapi.from_dict(served_document())


@pytest.fixture
def app():
    # The fuzzed requests run inside the test's transaction: keep Django from closing its
    # connection at the start and end of each request (its test client does the same).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield PredictFastPath(get_wsgi_application())
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def key_headers(make_key):
    _, raw = make_key("read", "predict", "manage", name="fuzzer")
    return {"Authorization": f"Bearer {raw}"}


def test_the_fuzzed_schema_is_the_served_one(client, key_headers):
    response = client.get(
        "/api/v1/schema", HTTP_ACCEPT="application/json", HTTP_AUTHORIZATION=key_headers["Authorization"]
    )
    assert response.status_code == 200
    assert orjson.loads(response.content) == served_document()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_within_its_schema_and_never_500(case, app, key_headers, iris):
    aim_at(case, iris)
    case.call_and_validate(app=app, headers=key_headers, checks=[not_a_server_error, response_schema_conformance])


@pytest.fixture
def iris(make_model):
    """A ready model: half the examples go to it rather than to a random id or name."""
    return make_model(iris_model(), name="iris")


def aim_at(case, model) -> None:
    parameters = case.path_parameters
    if not parameters or zlib.crc32(repr((case.body, case.query)).encode()) % 2:
        return
    if "model_id" in parameters or ("id" in parameters and case.path.startswith("/api/v1/models/")):
        parameters["model_id" if "model_id" in parameters else "id"] = str(model.pk)
    if "name" in parameters:
        parameters["name"] = model.name
