"""The serving exchange: one prediction, whichever door it came in by.

A door parses its transport and calls `answer(credential, ref, incoming, protocol)`:

- the /api/v1 predict views and the /v2 infer view (inference.views, inference.v2.views),
- the WSGI fast path in front of Django, for both (inference.fastpath),
- the admin's Try it (console),
- gRPC's ModelInfer (inference.grpc.service),

and sends the `Reply` it gets back. Everything between is here, once, in this order:

    authorize (access.principals)  ->  throttle (access.throttling)  ->  resolve a servable model
    ->  body size  ->  read the body  ->  decode (the protocol)  ->  predict: cache, session,
    history (inference.services)  ->  encode (the protocol)

No body is read before the caller is authorized, within budget, and the model is known and
servable (a gRPC message names its model: its protocol parses it in `resolve`, once the caller
is authorized and within budget; grpc itself bounded its size). An alias with a rollout picks
its primary or candidate here (inference.routing) and offers a copy to its shadow once the
answer is made (inference.shadow); every reply says which version answered (X-Model-Version).
A failure anywhere becomes the protocol's error reply (its error table: /api/v1 ``{"code", "detail"}``, /v2 ``{"error",
"code"}``, gRPC a status, all read from core.exceptions.problem), with its Retry-After. A
protocol (inference.protocols, inference.v2.protocol, inference.grpc.protocol) is how one wire
format decodes a request and encodes an answer; a new door is a new transport adapter over an
existing or new protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from access import throttling
from access.models import Scope
from access.permissions import RUN_MODEL
from access.principals import Credential, Principal, authorize
from core import request_log
from core.exceptions import PayloadTooLarge
from inference import routing, services, shadow
from inference.cache import body_memo, cache_tenant
from registry.models import MLModel


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model a request means: an id, or a name with a version or an alias (neither: the
    `production` alias's version, else the latest ready one)."""

    model_id: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None


@dataclass(slots=True)
class Incoming:
    """A request as its door has it: the body's announced length, how to read the body (called
    once the caller is admitted), and the headers its protocol reads (lower-case names)."""

    length: int
    read: Callable[[], bytes]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Decoded:
    """A request body as the model's feeds, and what the protocol asked of the prediction."""

    feeds: dict[str, Any]
    history_input: Any  # JSON-ready inputs for the history, or a function returning them
    input_size: int  # bytes of the request as decoded (decompressed): the history's truncation
    skip_cache: bool = False
    requested_outputs: list[str] | None = None
    exact: bool = False  # the values themselves (binary outputs), not a cached JSON rendering
    request: Any = None  # the protocol's own parsed request, for its encoder


@dataclass(slots=True)
class Reply:
    """An answer, independent of any transport."""

    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Protocol:
    """A wire format: how a request names its model and becomes feeds, and how an outcome or
    an error is written back. Subclasses: inference.protocols.JsonPredict, inference.v2.protocol.V2Infer."""

    # Remember validated bodies (inference.cache.BodyMemo): an identical repeat skips decoding.
    memo = False
    # The request headers it reads, which every door hands over in Incoming.headers.
    headers: tuple[str, ...] = ()

    def resolve(self, ref: ModelRef) -> MLModel:
        """The model ``ref`` means, if it may be served (services.ensure_servable); raises otherwise."""
        raise NotImplementedError

    def decode(self, model: MLModel, body: bytes, incoming: Incoming) -> Decoded:
        raise NotImplementedError

    def encode(self, outcome: services.PredictionOutcome, decoded: Decoded | None) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    def error(self, exc: Exception) -> Reply:
        raise NotImplementedError


def answer(credential: Credential, ref: ModelRef, incoming: Incoming, protocol: Protocol) -> Reply:
    """One prediction from the credential to the reply; every failure is the protocol's error."""
    shadow.client_started()  # shadow copies wait while a client is answered (inference.shadow)
    try:
        return serve(credential, ref, incoming, protocol)
    except Exception as exc:
        reply = protocol.error(exc)
        version = getattr(exc, "model_version", None)
        if version is not None:  # the version was chosen, then refused the request: say which
            reply.headers[routing.VERSION_HEADER] = version
        return reply
    finally:
        shadow.client_finished()


def serve(credential: Credential, ref: ModelRef, incoming: Incoming, protocol: Protocol) -> Reply:
    """As `answer`, raising a domain error (or DRF's 401/403) instead of rendering it."""
    request_log.bind_inference()  # counted in the metrics like every prediction, whatever the door
    principal = authorize(credential, scope=Scope.PREDICT, permissions=RUN_MODEL)
    throttling.check("predict", principal.ident)
    model = protocol.resolve(ref)  # servable, or raises: nothing below checks again
    plan = getattr(model, "routing_plan", None)  # an alias with a rollout (inference.serving)
    if plan is not None:
        model = routing.choose(plan, routing.routing_key(incoming.headers, principal.key))
    request_log.bind_model(model)
    try:
        return _predict(model, plan, principal, incoming, protocol)
    except Exception as exc:
        exc.model_version = model.version  # for answer's error reply
        raise


def _predict(model: MLModel, plan, principal: Principal, incoming: Incoming, protocol: Protocol) -> Reply:
    check_body_size(incoming.length)
    body = incoming.read()

    started = served = time.perf_counter()
    timings = services.Timings()
    caller = caller_of(principal)
    outcome = None
    if protocol.memo:
        remembered = body_memo.get(model, body, tenant=caller["tenant"])
        if remembered is not None:
            cache_key, history_input = remembered
            timings.parse = _ms_since(started)
            outcome = services.predict_cached(
                model=model,
                cache_key=cache_key,
                input_data=history_input,
                api_key=caller["api_key"],
                user=caller["user"],
                input_size=len(body),
                timings=timings,
            )
    decoded = None
    if outcome is None:
        decoded = protocol.decode(model, body, incoming)
        timings.parse = _ms_since(started)
        outcome = services.infer(
            model=model,
            feeds=decoded.feeds,
            skip_cache=decoded.skip_cache,
            api_key=caller["api_key"],
            user=caller["user"],
            history_input=decoded.history_input,
            input_size=decoded.input_size,
            requested_outputs=decoded.requested_outputs,
            exact=decoded.exact,
            timings=timings,
        )
        if protocol.memo and outcome.cache_key is not None:
            body_memo.put(model, body, outcome.cache_key, decoded.history_input, tenant=caller["tenant"])
    request_log.bind_outcome(outcome)

    started = time.perf_counter()
    content, headers = protocol.encode(outcome, decoded)
    timings.serialize = _ms_since(started)
    headers["X-Cache"] = "HIT" if outcome.cached else "MISS"
    headers["Server-Timing"] = timings.header()
    headers[routing.VERSION_HEADER] = model.version
    if plan is not None and plan.shadow is not None:
        # After the client's answer is made, and off its thread: see inference.shadow.
        shadow.offer(plan, protocol, body, incoming, outcome, served_ms=_ms_since(served))
    return Reply(200, content, headers)


def caller_of(principal: Principal) -> dict[str, Any]:
    """Who the prediction is recorded for, and whose cache entries it uses (inference.cache)."""
    api_key, user = principal.key, principal.user
    return {"api_key": api_key, "user": user, "tenant": cache_tenant(api_key=api_key, user=user)}


def check_body_size(content_length: int) -> None:
    if content_length > settings.MAX_REQUEST_BODY_BYTES:
        raise PayloadTooLarge(
            f"The request body is {content_length} bytes; the limit is {settings.MAX_REQUEST_BODY_BYTES} "
            "(MAX_REQUEST_BODY_BYTES). Send fewer rows per request, or use a batch job.",
            code="body_too_large",
        )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
