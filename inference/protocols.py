"""The wire formats the serving exchange (inference.exchange) speaks, each with its error table.

- `JsonPredict`: our /api/v1 predict contract. ``{"input_data": {...}, "skip_cache": false}`` in,
  ``{"id", "model_id", ..., "output_data", "cached", ...}`` out; errors ``{"code", "detail"}``.
- `V2Infer`: the Open Inference Protocol v2 infer request (JSON, optionally followed by binary
  tensors; ../shared/REFERENCE.md §1); errors ``{"error", "code"}`` (clients read "error").

Both error tables read core.exceptions.problem, so a status, a code, a Retry-After or a
WWW-Authenticate means the same on every door; /v2 differs only where the protocol says so: a
model that exists but is not served (not ready, archived, its file damaged) is 503.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings

from core.exceptions import NotFound, error_body, problem
from core.tensor_checks import InvalidInput
from inference import services
from inference.errors import ModelArchived, ModelIntegrityError, ModelNotReady
from inference.exchange import Decoded, Incoming, ModelRef, Protocol, Reply
from inference.serving import serving_cache
from inference.tensors import parse_json_body
from inference.v2 import codec
from registry.errors import ModelNotFound
from registry.models import MLModel

logger = logging.getLogger(__name__)

JSON = "application/json"
UNEXPECTED = "An unexpected error occurred; it has been logged."

# --- /api/v1 --------------------------------------------------------------------------------

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

    def resolve(self, ref: ModelRef) -> MLModel:
        if ref.model_id is not None:
            return serving_cache.by_id(ref.model_id)
        return serving_cache.by_name(ref.name, ref.version, ref.alias)

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


# --- /v2 ------------------------------------------------------------------------------------

# Models that exist but are not served answer 503, as the protocol has it for "not ready".
_NOT_SERVED = (ModelNotReady, ModelArchived, ModelIntegrityError)


def v2_json(document: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document), {"Content-Type": JSON})


def v2_error(exc: Exception) -> Reply:
    """Any failure as /v2's ``{"error", "code"}`` with its status; unexpected ones are logged, 500."""
    found = problem(exc)
    if found is None:
        logger.exception("v2 request failed")
        return v2_json({"error": UNEXPECTED, "code": "server_error"}, 500)
    reply = v2_json({"error": found.detail, "code": found.code}, 503 if isinstance(exc, _NOT_SERVED) else found.status)
    reply.headers.update(found.headers)
    return reply


def v2_resolve(name: str, version: str | None) -> MLModel:
    """A ready model version: the given one (a semver, or an alias such as `production`), or by
    default the `production` alias's version, else the name's highest ready version.

    Unknown names and versions are 404; a version that exists but is not served, or a name
    without any ready version, is 503 (not ready).
    """
    try:
        model = serving_cache.by_name(name, version or None)
    except ModelNotFound:
        known = list(MLModel.objects.named(name).newest_first().values_list("version", "status"))
        if not known:
            raise NotFound(f"Unknown model '{name}'.", code="model_not_found") from None
        listed = ", ".join(f"{known_version} ({known_status})" for known_version, known_status in known[:20])
        if version:
            raise NotFound(
                f"Model '{name}' has no version '{version}'. Its versions: {listed}.", code="model_not_found"
            ) from None
        raise ModelNotReady(
            f"No version of model '{name}' is ready (versions: {listed}). Try again once one is validated."
        ) from None
    services.ensure_servable(model)
    return model


class V2Infer(Protocol):
    headers = ("Content-Encoding", codec.HEADER_LENGTH)

    def resolve(self, ref: ModelRef) -> MLModel:
        return v2_resolve(ref.name, ref.version)

    def decode(self, model: MLModel, body: bytes, incoming: Incoming) -> Decoded:
        headers = incoming.headers
        body = codec.read_body(body, headers.get("content-encoding"), limit=settings.MAX_REQUEST_BODY_BYTES)
        request = codec.parse_infer_request(
            body,
            headers.get("inference-header-content-length"),
            inputs=model.input_schema,
            outputs=model.output_schema,
            allow_non_finite=model.allow_non_finite,
            max_elements=settings.MAX_INPUT_ELEMENTS,
            max_depth=settings.MAX_JSON_DEPTH,
        )
        feeds = request.feeds
        return Decoded(
            feeds,
            history_input=lambda: codec.feeds_as_json(feeds, model.input_schema),
            input_size=len(body),
            skip_cache=request.skip_cache,
            requested_outputs=[output.name for output in request.outputs],
            # JSON renders NaN as null anyway; binary outputs must be the exact values.
            exact=request.wants_binary,
            request=request,
        )

    def encode(self, outcome: services.PredictionOutcome, decoded: Decoded | None) -> tuple[bytes, dict[str, str]]:
        request = decoded.request
        values = outcome.values if outcome.values is not None else outcome.output_data
        tensors = [
            (output, codec.output_array(output.datatype, values[output.name], outcome.shapes.get(output.name)))
            for output in request.outputs
        ]
        model = outcome.model
        content, json_size = codec.encode_infer_response(
            model_name=model.name, model_version=model.version, request_id=request.id, outputs=tensors
        )
        if json_size is None:
            return content, {"Content-Type": JSON}
        return content, {"Content-Type": "application/octet-stream", codec.HEADER_LENGTH: str(json_size)}

    def error(self, exc: Exception) -> Reply:
        return v2_error(exc)


JSON_PREDICT = JsonPredict()
V2_INFER = V2Infer()
