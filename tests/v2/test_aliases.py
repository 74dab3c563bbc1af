"""/v2 through aliases: the version string `production` in metadata, ready and infer (infer on
the Django view and on the WSGI fast path), the production alias as the default version, and
the protocol's statuses for unknown aliases (404) and aliased versions not served (503)."""

from __future__ import annotations

import orjson
import pytest
from django.core.wsgi import get_wsgi_application
from django.test import Client

from core import invalidation
from inference.fastpath import PredictFastPath
from registry import services
from registry.models import MLModel
from tests.inference.test_fastpath import call
from tests.registry.versions import scaled_version

pytestmark = pytest.mark.django_db

FACTORS = {"1.0.0": 1.0, "1.1.0": 2.0, "2.0.0": 3.0}
REQUEST = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]})


@pytest.fixture
def iris():
    versions = {version: scaled_version("iris", version, factor) for version, factor in FACTORS.items()}
    services.alias_set(name="iris", alias="production", version="1.0.0")
    services.alias_set(name="iris", alias="staging", version="1.1.0")
    return versions


@pytest.fixture
def key(make_key):
    return make_key("predict")[1]


@pytest.fixture
def web(key):
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture(params=["django", "fastpath"])
def infer(request, key, web):
    """infer(path) -> (status, JSON body) for a POST of REQUEST to `path`."""
    if request.param == "fastpath":
        app = PredictFastPath(get_wsgi_application())

        def _infer(path: str):
            status, _headers, content = call(app, path, REQUEST, key=key)
            return status, orjson.loads(content)

        return _infer

    def _infer(path: str):
        response = web.generic("POST", path, REQUEST, content_type="")
        return response.status_code, response.json()

    return _infer


def answered_by(result) -> str:
    status, body = result
    assert status == 200, body
    version = body["model_version"]
    assert body["outputs"][0]["data"] == [value * FACTORS[version] for value in (1.0, 2.0, 3.0)]
    return version


def test_infer_through_an_alias_and_by_default_through_production(infer, iris):
    assert answered_by(infer("/v2/models/iris/versions/production/infer")) == "1.0.0"
    assert answered_by(infer("/v2/models/iris/versions/staging/infer")) == "1.1.0"
    assert answered_by(infer("/v2/models/iris/infer")) == "1.0.0"  # not the latest, 2.0.0
    assert answered_by(infer("/v2/models/iris/versions/2.0.0/infer")) == "2.0.0"
    services.alias_set(name="iris", alias="production", version="2.0.0")
    assert answered_by(infer("/v2/models/iris/infer")) == "2.0.0"  # the move is seen at once


def test_metadata_and_ready_through_an_alias(web, iris):
    metadata = web.get("/v2/models/iris/versions/production")
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "iris"
    assert metadata.json()["versions"] == ["2.0.0", "1.1.0", "1.0.0"]
    assert web.get("/v2/models/iris/versions/production/ready").status_code == 200
    assert web.get("/v2/models/iris/versions/staging/ready").status_code == 200


def test_an_unknown_alias_is_404_in_the_protocols_format(infer, web, iris):
    status, body = infer("/v2/models/iris/versions/canary/infer")
    assert (status, body["code"]) == (404, "alias_not_found")
    assert "canary" in body["error"] and "production" in body["error"]
    ready = web.get("/v2/models/iris/versions/canary/ready")
    assert (ready.status_code, ready.json()["code"]) == (404, "alias_not_found")
    unknown_name = web.get("/v2/models/nope/versions/production")
    assert (unknown_name.status_code, unknown_name.json()["code"]) == (404, "model_not_found")


def test_an_alias_to_an_archived_version_is_503_not_ready(infer, web, iris):
    # Archiving an aliased version is refused now; a row archived before that rule still exists.
    MLModel.objects.filter(pk=iris["1.0.0"].pk).update(status=MLModel.Status.ARCHIVED)
    invalidation.notify("models")
    for path in ("/v2/models/iris/versions/production/infer", "/v2/models/iris/infer"):
        status, body = infer(path)
        assert (status, body["code"]) == (503, "model_archived"), body
    assert web.get("/v2/models/iris/versions/production/ready").status_code == 503
    assert answered_by(infer("/v2/models/iris/versions/staging/infer")) == "1.1.0"
