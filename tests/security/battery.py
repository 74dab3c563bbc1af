"""What every item of the battery checks after the attack: the server still answers a good
request, and nothing was lost (models, files, history). And one way to send a request down
each of the two /api/v1 predict paths: Django's views and the WSGI fast path in front of them
(`inference.fastpath`), which answer the same requests with separate code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from django.core.wsgi import get_wsgi_application
from django.test import Client

from inference.fastpath import PredictFastPath
from inference.history import history
from inference.models import Prediction
from registry.models import MLModel
from tests.inference.test_fastpath import call

IRIS_ROW = {"X": [[5.1, 3.5, 1.4, 0.2]]}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def code(self) -> str:
        return self.json()["code"]


def via_django(path: str, body: bytes, *, key: str | None, query: str = "", **headers: str) -> Reply:
    client = Client()
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    url = path + (f"?{query}" if query else "")
    response = client.generic("POST", url, body, content_type="application/json", **headers)
    return Reply(response.status_code, dict(response.headers), response.content)


_fast_app = None


def via_fastpath(path: str, body: bytes, *, key: str | None, query: str = "", **headers: str) -> Reply:
    global _fast_app
    if _fast_app is None:
        _fast_app = PredictFastPath(get_wsgi_application())
    status, response_headers, content = call(_fast_app, path, body, key=key, query=query, **headers)
    return Reply(status, response_headers, content)


SENDERS = {"django": via_django, "fastpath": via_fastpath}


def predict_path(model_id: str) -> str:
    return f"/api/v1/models/{model_id}/predict"


def assert_still_serves(send, model_id: str, key: str, row: dict | None = None) -> dict:
    """A good prediction right after the attack is a 200 with outputs."""
    reply = send(predict_path(model_id), orjson.dumps({"input_data": row or IRIS_ROW, "skip_cache": True}), key=key)
    assert reply.status == 200, reply.content[:500]
    assert reply.json()["output_data"]
    return reply.json()


def assert_history_is(model_id: str, expected: int) -> None:
    """Every admitted prediction and none of the refused ones is in the history."""
    history.flush()
    assert Prediction.objects.filter(model_id=model_id).count() == expected


def model_snapshot() -> list[tuple]:
    """The registry as rows: what "nothing lost" compares before and after."""
    return list(MLModel.objects.order_by("name", "version").values_list("name", "version", "status", "file_sha256"))
