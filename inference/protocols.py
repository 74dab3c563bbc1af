"""Our /api/v1 predict contract, as a protocol of the serving exchange (inference.exchange).

``{"input_data": {...}, "skip_cache": false}`` in, ``{"id", "model_id", ..., "output_data",
"cached", ...}`` out; errors ``{"code", "detail"}`` from core.exceptions.problem, the table the
/v2 protocol (inference.v2.protocol) reads too, so a status, a code, a Retry-After or a
WWW-Authenticate means the same on every door.
"""

from __future__ import annotations

import logging

import orjson
from django.conf import settings

from core.exceptions import error_body, problem
from core.tensor_checks import InvalidInput
from inference import services
from inference.exchange import Decoded, Incoming, ModelRef, Protocol, Reply
from inference.routing import ROUTING_HEADER
from inference.serving import serving_cache
from inference.tensors import parse_json_body
from registry.models import MLModel

logger = logging.getLogger(__name__)

JSON = "application/json"
UNEXPECTED = "An unexpected error occurred; it has been logged."

PREDICT_FIELDS = {"input_data", "skip_cache"}


def v1_error(exc: Exception) -> Reply:
    """Any failure as /api/v1's ``{"code", "detail"}`` with its status; unexpected ones are logged, 500."""
    found = problem(exc)
    if found is None:
        logger.exception("predict failed")
        return Reply(500, orjson.dumps(error_body("server_error", UNEXPECTED)), {"Content-Type": JSON})
    content = orjson.dumps(error_body(found.code, found.detail, **found.extra))
    return Reply(found.status, content, {"Content-Type": JSON, **found.headers})


def parse_predict_body(body: bytes) -> tuple[object, bool]:
    """(input_data, skip_cache) from a predict request body."""
    document = parse_json_body(body, max_depth=settings.MAX_JSON_DEPTH)
    if not isinstance(document, dict):
        raise InvalidInput('The body must be a JSON object: {"input_data": {...}, "skip_cache": false}.')
    unexpected = sorted(set(document) - PREDICT_FIELDS)
    if unexpected:
        raise InvalidInput(
            f"Unknown field(s) {', '.join(map(repr, unexpected))}. Send input_data and optionally skip_cache.",
            code="unknown_field",
        )
    if "input_data" not in document:
        raise InvalidInput('input_data is required: {"input_data": {"<input name>": [...]}}.', code="missing_field")
    skip_cache = document.get("skip_cache", False)
    if not isinstance(skip_cache, bool):
        raise InvalidInput("skip_cache must be true or false.", code="invalid_field")
    return document["input_data"], skip_cache


class JsonPredict(Protocol):
    memo = True
    headers = (ROUTING_HEADER,)

    def resolve(self, ref: ModelRef) -> MLModel:
        if ref.model_id is not None:
            model = serving_cache.by_id(ref.model_id)
        else:
            model = serving_cache.by_name(ref.name, ref.version, ref.alias)
        services.ensure_servable(model)
        return model

    def decode(self, model: MLModel, body: bytes, incoming: Incoming) -> Decoded:
        input_data, skip_cache = parse_predict_body(body)
        feeds = services.decode_model_inputs(model, input_data)
        return Decoded(feeds, history_input=input_data, input_size=len(body), skip_cache=skip_cache)

    def encode(self, outcome: services.PredictionOutcome, decoded: Decoded | None) -> tuple[bytes, dict[str, str]]:
        model = outcome.model
        document = {
            "id": outcome.id,
            "model_id": model.pk,
            "model_name": model.name,
            "model_version": model.version,
            "output_data": outcome.output_data,
            "inference_time_ms": outcome.inference_time_ms,
            "cached": outcome.cached,
            "created_at": outcome.created_at,
        }
        if outcome.warnings:
            document["warnings"] = outcome.warnings
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": JSON}

    def error(self, exc: Exception) -> Reply:
        return v1_error(exc)


JSON_PREDICT = JsonPredict()
