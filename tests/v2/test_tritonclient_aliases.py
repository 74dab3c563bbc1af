"""Aliases with the real Triton client against the real server (granian, the WSGI fast path):
`model_version="production"` and the production alias as the default version, set and moved
through the registry API of the same server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import urllib3
from tritonclient.utils import InferenceServerException

from tests.inference.factories import make_scaled_model, reference_run
from tests.registry.polling import wait_validated
from tests.v2.test_tritonclient import tensor

pytestmark = pytest.mark.e2e

FACTORS = {"1.0.0": 2.0, "2.0.0": 3.0}
X = np.array([[1.0, -2.0, 3.5]], dtype=np.float32)


def api(server, method: str, path: str, **kwargs) -> urllib3.BaseHTTPResponse:
    headers = {"Authorization": f"Bearer {server.keys['manage']}"}
    return urllib3.request(method, f"{server.base}/api/v1{path}", headers=headers, timeout=120, **kwargs)


def register_versions(server) -> str:
    """A new name (each test run's server keeps its database) with versions 1.0.0 and 2.0.0."""
    name = f"aliased-{uuid.uuid4().hex[:8]}"
    for version, factor in FACTORS.items():
        upload = ("model.onnx", make_scaled_model(factor), "application/octet-stream")
        response = api(server, "POST", "/models", fields={"name": name, "version": version, "file": upload})
        assert response.status == 202, response.data[:2000]
        assert wait_validated(read_model(server, response.json()["id"]))["status"] == "ready"
    return name


def read_model(server, model_id: str):
    """What tests.registry.polling.wait_validated polls: the model, with the read key."""
    url, headers = f"{server.base}/api/v1/models/{model_id}", {"Authorization": f"Bearer {server.keys['read']}"}
    return lambda: urllib3.request("GET", url, headers=headers, timeout=120).json()


def move(server, name: str, alias: str, version: str) -> None:
    response = api(server, "PUT", f"/models/by-name/{name}/aliases/{alias}", json={"version": version})
    assert response.status in (200, 201), response.data[:2000]


def answered_by(result) -> str:
    version = result.get_response()["model_version"]
    expected = reference_run(make_scaled_model(FACTORS[version]), {"X": X})["Y"]
    np.testing.assert_array_equal(result.as_numpy("Y"), expected)
    return version


def test_model_version_production_and_the_default_follow_the_alias(v2_server, triton):
    name = register_versions(v2_server)
    assert answered_by(triton.infer(name, [tensor("X", X, "FP32")])) == "2.0.0"  # no alias: the latest

    move(v2_server, name, "production", "1.0.0")
    assert answered_by(triton.infer(name, [tensor("X", X, "FP32")], model_version="production")) == "1.0.0"
    assert answered_by(triton.infer(name, [tensor("X", X, "FP32")])) == "1.0.0"
    assert triton.get_model_metadata(name, "production")["name"] == name
    assert triton.is_model_ready(name, "production")
    assert not triton.is_model_ready(name, "staging")
    with pytest.raises(InferenceServerException) as unknown:
        triton.infer(name, [tensor("X", X, "FP32")], model_version="staging")
    assert unknown.value.status() == "404"
    assert "no alias 'staging'" in unknown.value.message()

    move(v2_server, name, "production", "2.0.0")  # seen by the next request
    assert answered_by(triton.infer(name, [tensor("X", X, "FP32")], model_version="production")) == "2.0.0"
    assert answered_by(triton.infer(name, [tensor("X", X, "FP32")])) == "2.0.0"
