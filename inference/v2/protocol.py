"""The Open Inference Protocol v2 infer request, as a protocol of the serving exchange
(inference.exchange): JSON, optionally followed by binary tensors (../shared/REFERENCE.md §1).

Errors are ``{"error", "code"}`` (clients read "error"; "code" is ours), from the same table as
/api/v1 (core.exceptions.problem); /v2 differs only where the protocol says so: a model that
exists but is not served (not ready, archived) is 503.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import orjson
from django.conf import settings

from core.exceptions import NotFound, Problem, problem
from inference import services
from inference.errors import ModelArchived, ModelNotReady
from inference.exchange import Decoded, Incoming, ModelRef, Protocol, Reply
from inference.routing import ROUTING_HEADER
from inference.serving import serving_cache
from inference.v2 import codec
from registry.errors import ModelNotFound
from registry.models import MLModel

logger = logging.getLogger(__name__)

JSON = "application/json"

# Models that exist but are not served answer 503, as the protocol has it for "not ready" (a file
# this server cannot read, inference.errors.ModelFileUnavailable, is a 503 everywhere).
_NOT_SERVED = (ModelNotReady, ModelArchived)


def v2_json(document: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document), {"Content-Type": JSON})


def v2_problem(exc: Exception) -> Problem:
    """What a failure means under the v2 protocol, whichever transport carries it (REST here,
    gRPC in inference.grpc): the common error table, with a model that is not served as 503.
    Unexpected failures are logged, and are a 500 ``server_error``."""
    found = problem(exc)
    if found is None:
        logger.exception("v2 request failed")
        return Problem(500, "server_error", "An unexpected error occurred; it has been logged.")
    if isinstance(exc, _NOT_SERVED):
        return replace(found, status=503)
    return found


def v2_error(exc: Exception) -> Reply:
    """Any failure as /v2's ``{"error", "code"}`` with its status."""
    found = v2_problem(exc)
    reply = v2_json({"error": found.detail, "code": found.code}, found.status)
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
    headers = ("Content-Encoding", codec.HEADER_LENGTH, ROUTING_HEADER)

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


V2_INFER = V2Infer()
