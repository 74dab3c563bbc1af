"""The prediction cache as a client sees it: X-Cache and `cached`, the metrics endpoints,
invalidation by a new file, and predictions going on when Redis is down.

The cache is the backend settings configure: local memory by default, Redis when REDIS_URL is
set (as in CI), one Redis database per test worker (see conftest.py).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from numpy.testing import assert_allclose

from tests.inference.api import CACHE_METRICS, HEALTH, MODELS, predict, predict_ok
from tests.inference.factories import float32, make_iris_model, make_scaled_model, reference_run

pytestmark = pytest.mark.django_db

ROW = [[5.1, 3.5, 1.4, 0.2]]
OTHER_ROW = [[6.7, 3.0, 5.2, 2.3]]
DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


@pytest.fixture
def iris(ready_model):
    return ready_model(make_iris_model(zipmap=False), name="iris")


def test_first_call_misses_then_the_same_input_hits(iris, predict_client):
    first = predict(predict_client, iris["id"], {"X": ROW})
    second = predict(predict_client, iris["id"], {"X": ROW})

    assert (first["X-Cache"], first.json()["cached"]) == ("MISS", False)
    assert (second["X-Cache"], second.json()["cached"]) == ("HIT", True)
    assert second.json()["output_data"] == first.json()["output_data"]
    assert second.json()["inference_time_ms"] == 0
    assert second.json()["id"] != first.json()["id"]  # each call is its own prediction


def test_a_different_input_misses(iris, predict_client):
    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is False
    other = predict_ok(predict_client, iris["id"], {"X": OTHER_ROW})
    assert other["cached"] is False
    expected = reference_run(make_iris_model(zipmap=False), {"X": float32(OTHER_ROW)})
    assert_allclose(other["output_data"]["probabilities"], expected["probabilities"], rtol=1e-6)
    # A batch holding a cached row is another input.
    assert predict_ok(predict_client, iris["id"], {"X": ROW + OTHER_ROW})["cached"] is False


def test_the_same_tensor_spelled_differently_hits(iris, predict_client):
    assert predict_ok(predict_client, iris["id"], {"X": [[5, 3, 1.5, 0.25]]})["cached"] is False
    assert predict_ok(predict_client, iris["id"], {"X": [[5.0, 3.00, 15e-1, 0.250]]})["cached"] is True


def test_skip_cache_runs_the_model(iris, predict_client):
    predict_ok(predict_client, iris["id"], {"X": ROW})

    response = predict(predict_client, iris["id"], {"X": ROW}, skip_cache=True)

    assert response.status_code == 200
    assert (response["X-Cache"], response.json()["cached"]) == ("MISS", False)
    assert response.json()["inference_time_ms"] > 0
    assert predict_ok(predict_client, iris["id"], {"X": ROW}, skip_cache=False)["cached"] is True


def test_versions_with_the_same_file_share_cached_outputs(ready_model, predict_client):
    first = ready_model(make_scaled_model(2.0), name="scaler", version="1.0.0")
    second = ready_model(make_scaled_model(2.0), name="scaler", version="1.0.1")
    predict_ok(predict_client, first["id"], {"X": [[1, 2, 3]]})

    body = predict_ok(predict_client, second["id"], {"X": [[1, 2, 3]]})

    assert body["cached"] is True
    assert (body["model_id"], body["model_version"]) == (second["id"], "1.0.1")
    assert body["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}


def test_zero_ttl_turns_the_cache_off(iris, predict_client, settings):
    settings.PREDICTION_CACHE_TTL_SECONDS = 0
    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is False
    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is False


def test_metrics_count_hits_and_misses_and_reset(iris, predict_client, manage_client, read_client):
    reset = manage_client.post(f"{CACHE_METRICS}/reset")
    assert reset.status_code == 200
    assert reset.json() == {"hits": 0, "misses": 0, "hit_rate": 0.0}

    predict_ok(predict_client, iris["id"], {"X": ROW})  # miss
    predict_ok(predict_client, iris["id"], {"X": ROW})  # hit
    predict_ok(predict_client, iris["id"], {"X": ROW})  # hit
    predict_ok(predict_client, iris["id"], {"X": OTHER_ROW})  # miss
    predict_ok(predict_client, iris["id"], {"X": ROW}, skip_cache=True)  # not looked up

    metrics = read_client.get(CACHE_METRICS)
    assert metrics.status_code == 200
    assert metrics.json() == {"hits": 2, "misses": 2, "hit_rate": 0.5}

    assert manage_client.post(f"{CACHE_METRICS}/reset").json() == {"hits": 0, "misses": 0, "hit_rate": 0.0}
    assert read_client.get(CACHE_METRICS).json() == {"hits": 0, "misses": 0, "hit_rate": 0.0}
    # The entries themselves are kept: only the counters start again.
    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is True
    assert read_client.get(CACHE_METRICS).json() == {"hits": 1, "misses": 0, "hit_rate": 1.0}


def test_metrics_need_read_and_reset_needs_manage(api_client, client_for, read_client):
    assert api_client.get(CACHE_METRICS).status_code == 401
    assert client_for("predict").get(CACHE_METRICS).status_code == 403
    for client in (read_client, client_for("read", "predict")):
        response = client.post(f"{CACHE_METRICS}/reset")
        assert response.status_code == 403
        assert response.json()["code"] == "missing_scope"
    assert api_client.post(f"{CACHE_METRICS}/reset").status_code == 401


def test_a_new_file_is_a_new_version_with_its_own_cached_outputs(ready_model, predict_client, manage_client):
    model = ready_model(make_scaled_model(2.0), name="scaler")
    url = f"{MODELS}/{model['id']}"
    assert predict_ok(predict_client, model["id"], {"X": [[1, 2, 3]]})["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    assert predict_ok(predict_client, model["id"], {"X": [[1, 2, 3]]})["cached"] is True

    # A ready version keeps its file, so its cached outputs stay right; the new file is a new version.
    retrained = make_scaled_model(3.0)
    upload = SimpleUploadedFile("model.onnx", retrained, content_type="application/octet-stream")
    refused = manage_client.post(f"{url}/upload", {"file": upload}, format="multipart")
    assert (refused.status_code, refused.json()["code"]) == (409, "version_immutable")
    assert predict_ok(predict_client, model["id"], {"X": [[1, 2, 3]]})["output_data"] == {"Y": [[2.0, 4.0, 6.0]]}
    new = ready_model(retrained, name="scaler", version="1.1.0")

    body = predict_ok(predict_client, new["id"], {"X": [[1, 2, 3]]})
    assert body["cached"] is False
    expected = reference_run(retrained, {"X": float32([[1, 2, 3]])})["Y"]
    assert body["output_data"] == {"Y": expected.tolist()} == {"Y": [[3.0, 6.0, 9.0]]}
    assert predict_ok(predict_client, new["id"], {"X": [[1, 2, 3]]})["cached"] is True


@pytest.fixture
def redis_only(settings):
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL): the local-memory cache cannot go down")


def test_predictions_go_on_when_redis_is_down(redis_only, iris, predict_client, api_client, settings):
    # Reconnect quickly once Redis is back, so that this test can see it.
    settings.PREDICTION_CACHE_RETRY_SECONDS = 0.5
    working = settings.CACHES
    predict_ok(predict_client, iris["id"], {"X": ROW})
    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is True

    settings.CACHES = DEAD_REDIS  # Django drops its cache connections on this change
    rng = np.random.default_rng(7)
    for _ in range(3):
        row = rng.uniform(0, 8, size=(1, 4)).round(2).tolist()
        started = time.perf_counter()
        response = predict(predict_client, iris["id"], {"X": row})
        assert response.status_code == 200, response.content
        assert (response["X-Cache"], response.json()["cached"]) == ("MISS", False)
        assert time.perf_counter() - started < 2  # no connection timeout paid per request
        expected = reference_run(make_iris_model(zipmap=False), {"X": float32(row)})["probabilities"]
        assert_allclose(response.json()["output_data"]["probabilities"], expected, rtol=1e-6)

    health = api_client.get(HEALTH)
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert "cache" in health.json()["degraded"]
    assert health.json()["components"]["database"]["ok"] is True

    settings.CACHES = working
    time.sleep(0.6)  # the breaker's retry delay
    assert api_client.get(HEALTH).json()["status"] == "healthy"
    assert predict_ok(predict_client, iris["id"], {"X": OTHER_ROW})["cached"] is False
    assert predict_ok(predict_client, iris["id"], {"X": OTHER_ROW})["cached"] is True


def test_cache_metrics_with_redis_down_answer_json_not_a_crash(redis_only, manage_client, read_client, settings):
    settings.PREDICTION_CACHE_RETRY_SECONDS = 0  # no breaker left open for the next test
    settings.CACHES = DEAD_REDIS
    manage_client.raise_request_exception = False

    metrics = read_client.get(CACHE_METRICS)
    assert metrics.status_code == 200
    assert set(metrics.json()) == {"hits", "misses", "hit_rate"}

    reset = manage_client.post(f"{CACHE_METRICS}/reset")
    assert reset.status_code == 503, reset.content[:300]
    assert reset["Content-Type"] == "application/json"
    assert reset.json()["code"]


def test_cache_is_per_key_across_both_protocols(iris, predict_client, client_for):
    """Tenancy (inference/cache.py): a key reads only what it computed itself, through /api/v1
    and /v2 alike; another key's first request for the same input is a MISS."""
    other = client_for("predict", name="other-tenant")
    v2_body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}

    def v2_cache(client) -> str:
        response = client.post("/v2/models/iris/infer", v2_body, format="json")
        assert response.status_code == 200, response.content
        return response["X-Cache"]

    assert predict_ok(predict_client, iris["id"], {"X": ROW})["cached"] is False
    assert v2_cache(predict_client) == "HIT"  # the same key, the other protocol
    assert v2_cache(other) == "MISS"
    assert predict_ok(other, iris["id"], {"X": ROW})["cached"] is True
