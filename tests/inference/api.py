"""Calling the inference API from tests: URLs and predict requests with exact bodies.

Bodies are serialized here, not by the test client's JSON renderer, so that a test controls
every byte (NaN literals, huge numbers, deep nesting) and sends what a real client would.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.test import APIClient

MODELS = "/api/v1/models"
PREDICTIONS = "/api/v1/predictions"
CACHE_METRICS = "/api/v1/cache/metrics"
HEALTH = "/api/v1/health"


def predict_url(model_id: str) -> str:
    return f"{MODELS}/{model_id}/predict"


def named_predict_url(name: str, version: str | None = None) -> str:
    url = f"{MODELS}/by-name/{name}/predict"
    return f"{url}?version={version}" if version else url


def predictions_url(model_id: str) -> str:
    return f"{MODELS}/{model_id}/predictions"


def post_body(client: APIClient, url: str, body: bytes | str):
    """POST raw bytes as application/json."""
    if isinstance(body, str):
        body = body.encode()
    return client.generic("POST", url, body, content_type="application/json")


def predict(client: APIClient, model_id: str, input_data: Any, **fields: Any):
    """POST {"input_data": ..., **fields} to a model's predict URL (numpy arrays allowed)."""
    document = orjson.dumps({"input_data": input_data, **fields}, option=orjson.OPT_SERIALIZE_NUMPY)
    return post_body(client, predict_url(model_id), document)


def predict_ok(client: APIClient, model_id: str, input_data: Any, **fields: Any) -> dict:
    """A prediction that must succeed; returns the body, checked against the X-Cache header."""
    response = predict(client, model_id, input_data, **fields)
    assert response.status_code == 200, response.content[:2000]
    body = response.json()
    assert response["X-Cache"] == ("HIT" if body["cached"] else "MISS")
    return body
