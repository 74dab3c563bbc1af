"""Predict under /api/v1 through aliases, on the Django view and on the WSGI fast path alike:
`?alias=`, a version string that names an alias, the `production` alias as the default, the
bad inputs, and the serving cache seeing a move at once (in this process and, through Redis,
from another process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest
from django.core.wsgi import get_wsgi_application
from django.test import Client

from core import invalidation
from inference.fastpath import PredictFastPath
from registry import services
from registry.models import MLModel, ModelAlias
from tests.inference.test_fastpath import call
from tests.jobs.conftest import database_url
from tests.registry.versions import scaled_version

pytestmark = pytest.mark.django_db

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = [[1.0, 2.0, 3.0]]
BODY = orjson.dumps({"input_data": {"X": ROW}, "skip_cache": True})
FACTORS = {"1.0.0": 1.0, "1.1.0": 2.0, "2.0.0": 3.0}


@pytest.fixture
def iris():
    return {version: scaled_version("iris", version, factor) for version, factor in FACTORS.items()}


@pytest.fixture
def key(make_key):
    return make_key("predict", name="caller")[1]


@pytest.fixture(params=["django", "fastpath"])
def predict(request, key):
    """predict(query) -> (status, JSON body) for POST /api/v1/models/by-name/iris/predict?<query>."""
    path = "/api/v1/models/by-name/iris/predict"
    if request.param == "fastpath":
        app = PredictFastPath(get_wsgi_application())

        def _predict(query: str = "", name: str = "iris"):
            status, _headers, content = call(
                app, path.replace("iris", name), BODY, key=key, query=query, SERVER_PORT="80"
            )
            return status, orjson.loads(content)

        return _predict

    def _predict(query: str = "", name: str = "iris"):
        url = path.replace("iris", name) + (f"?{query}" if query else "")
        response = Client().post(url, BODY, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
        return response.status_code, response.json()

    return _predict


def answered_by(result) -> str:
    """The version that answered, checked against its output (Y = X * factor)."""
    status, body = result
    assert status == 200, body
    version = body["model_version"]
    assert body["output_data"]["Y"] == [[value * FACTORS[version] for value in ROW[0]]]
    return version


def test_without_a_version_the_production_alias_wins_over_the_latest(predict, iris):
    assert answered_by(predict()) == "2.0.0"  # no alias yet: the latest ready version
    services.alias_set(name="iris", alias="production", version="1.0.0")
    assert answered_by(predict()) == "1.0.0"  # seen by the very next request
    services.alias_set(name="iris", alias="production", version="1.1.0")
    assert answered_by(predict()) == "1.1.0"
    services.alias_delete(name="iris", alias="production")
    assert answered_by(predict()) == "2.0.0"


def test_alias_and_version_pick_what_they_name(predict, iris):
    services.alias_set(name="iris", alias="production", version="1.0.0")
    services.alias_set(name="iris", alias="staging", version="1.1.0")
    assert answered_by(predict("alias=staging")) == "1.1.0"
    assert answered_by(predict("alias=production")) == "1.0.0"
    assert answered_by(predict("version=2.0.0")) == "2.0.0"  # a version bypasses the default
    assert answered_by(predict("version=staging")) == "1.1.0"  # a version string that is an alias
    assert answered_by(predict("alias=")) == "1.0.0"  # empty: as if absent


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("alias=staging&version=1.0.0", 400, "conflicting_parameters"),
        ("alias=canary", 404, "alias_not_found"),
        ("version=canary", 404, "alias_not_found"),
        ("alias=1.0.0", 400, "alias_is_version"),
        ("alias=bad.name", 400, "invalid_alias"),
        ("version=9.9.9", 404, "model_not_found"),
    ],
)
def test_bad_alias_requests(predict, iris, query, status, code):
    services.alias_set(name="iris", alias="staging", version="1.1.0")
    got_status, body = predict(query)
    assert (got_status, body["code"]) == (status, code), body
    assert body["detail"]


def test_an_alias_on_a_name_that_does_not_exist_is_404(predict, iris):
    status, body = predict("alias=production", name="nope")
    assert (status, body["code"]) == (404, "model_not_found")


def test_an_alias_to_an_archived_version_answers_as_that_version_does(predict, iris):
    services.alias_set(name="iris", alias="production", version="1.0.0")
    # Archiving an aliased version is refused now; a row archived before that rule still exists.
    MLModel.objects.filter(pk=iris["1.0.0"].pk).update(status=MLModel.Status.ARCHIVED)
    invalidation.notify("models")
    for query in ("", "alias=production"):
        status, body = predict(query)
        assert (status, body["code"]) == (409, "model_archived"), body
    assert answered_by(predict("version=1.1.0")) == "1.1.0"


@pytest.mark.django_db(transaction=True)
def test_a_move_in_another_process_reaches_this_one_through_redis(predict, iris, settings):
    """The serving cache here keeps rows for an hour; only the invalidation that the moving
    process publishes on Redis can make this process see the move. (Transactional: the other
    process must see this test's rows.)"""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (cross-process invalidation is Redis pub/sub)")
    settings.SERVING_CACHE_SECONDS = 3600
    services.alias_set(name="iris", alias="production", version="1.0.0")
    assert answered_by(predict()) == "1.0.0"  # cached here now
    moved = subprocess.run(
        [sys.executable, "-c", MOVE_SCRIPT],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "modelforge_site.settings", "DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert ModelAlias.objects.get(name="iris", alias="production").model_id == iris["1.1.0"].pk
    deadline = time.monotonic() + 20  # a wait for the message, not a timing assertion
    while predict()[1].get("model_version") != "1.1.0" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answered_by(predict()) == "1.1.0"


MOVE_SCRIPT = """
import django
django.setup()
from registry import services
services.alias_set(name="iris", alias="production", version="1.1.0")
"""
