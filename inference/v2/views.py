"""The /v2 routes (Open Inference Protocol v2 over REST; ../shared/REFERENCE.md §1).

Plain Django views, not DRF: the body is read here (tritonclient sends no Content-Type, and
binary bodies are not JSON), and every answer, errors included, is the protocol's own JSON:
``{"error": "<what to fix>", "code": "<rule>"}`` (clients read "error"; "code" is ours).

Access: an API key as ``Authorization: Bearer <key>``; scope ``predict`` for model metadata,
model config, model ready and infer, ``manage`` for the repository extension. The health probes and the
server metadata are open: the metadata names only the server, its version and extensions, and
clients ask for it before anything else. Sessions are not accepted on /v2, so CSRF (a defence
for cookie-authenticated requests) does not apply and the views are csrf_exempt.

Statuses: 400 bad request, 401/403 key or scope, 404 unknown model, version or route, 413 body
over the limit (also once decompressed), 415 an unsupported Content-Encoding, 503 a model that
is not ready (any status but ready, archived included) or a full queue (with Retry-After).

Infer is a door of the serving exchange (inference.exchange), as is the WSGI fast path in front
of Django (inference.fastpath), so both answer alike; errors come from the /v2 error table
(inference.v2.protocol.v2_error).
"""

from __future__ import annotations

import orjson
from django.conf import settings
from django.http import HttpResponse, RawPostDataException
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from access.models import Scope
from access.principals import Credential, authorize
from core.body_reading import content_length
from core.tensor_checks import InvalidInput
from inference import exchange
from inference.exchange import Reply
from inference.sessions import model_ready
from inference.v2 import codec, metadata, repository
from inference.v2.model_config import triton_config
from inference.v2.protocol import v2_error, v2_json, v2_resolve


def as_response(reply: Reply) -> HttpResponse:
    headers = dict(reply.headers)
    content_type = headers.pop("Content-Type", "application/json" if reply.content else "text/plain; charset=utf-8")
    return HttpResponse(reply.content, status=reply.status, content_type=content_type, headers=headers)


@method_decorator(csrf_exempt, name="dispatch")
class V2View(View):
    """Routes answer with a `Reply`; errors of every kind become the protocol's JSON errors.

    ``scope`` is the API key scope a route needs (None: open); sessions are not accepted.
    Handlers take ``(request, api_key, **route_kwargs)``. A door of the serving exchange
    (``exchange_door``) is authorized by the exchange itself.
    """

    scope: str | None = Scope.PREDICT
    exchange_door = False

    def dispatch(self, request, *args, **kwargs):
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        allowed = ", ".join(self._allowed_methods())
        if method == "options":
            return as_response(Reply(200, headers={"Allow": allowed}))
        if handler is None:
            reply = v2_json(
                {"error": f"{request.method} is not allowed on {request.path}; use {allowed}.", "code": "bad_method"},
                405,
            )
            reply.headers["Allow"] = allowed
            return as_response(reply)
        try:
            api_key = None
            if self.scope and not self.exchange_door:
                credential = Credential.from_header(request.headers.get("Authorization"))
                api_key = authorize(credential, scope=self.scope, permissions=None).key
            reply = handler(request, api_key, *args, **kwargs)
        except Exception as exc:
            reply = v2_error(exc)
        return as_response(reply)


class ServerLiveView(V2View):
    scope = None

    def get(self, request, api_key):
        return Reply(200)


class ServerReadyView(V2View):
    """Ready: the checks of /api/v1/ready (core.probes.check_ready)."""

    scope = None

    def get(self, request, api_key):
        reason = metadata.not_ready_reason()
        if reason is not None:
            code, message = reason
            return v2_json({"error": message, "code": code}, 503)
        return Reply(200)


class ServerMetadataView(V2View):
    scope = None

    def get(self, request, api_key):
        return v2_json(metadata.server_metadata())


class ModelMetadataView(V2View):
    def get(self, request, api_key, name, version=None):
        return v2_json(metadata.model_metadata(name, version))


class ModelReadyView(V2View):
    """Ready once the version's sessions are loaded and warmed up in this process
    (inference.sessions.model_ready): 503 while another request is loading them."""

    def get(self, request, api_key, name, version=None):
        model = v2_resolve(name, version)
        if not model_ready(model):
            reply = v2_json(
                {
                    "error": f"{model} is loading or warming up in this server process. Retry shortly.",
                    "code": "model_loading",
                },
                503,
            )
            reply.headers["Retry-After"] = "1"
            return reply
        return Reply(200)


class ModelConfigView(V2View):
    """The version's configuration in Triton's shape (inference.v2.model_config)."""

    def get(self, request, api_key, name, version=None):
        return v2_json(triton_config(v2_resolve(name, version)))


class InferView(V2View):
    """The /v2 door of the serving exchange (inference.exchange); its route, protocol and model
    reference come from inference.routes."""

    exchange_door = True
    protocol = None
    ref = None

    def post(self, request, api_key, **kwargs):
        return exchange.answer(
            Credential.from_header(request.headers.get("Authorization")),
            self.ref(kwargs, request.GET),
            exchange.Incoming(
                content_length(request.META.get("CONTENT_LENGTH")),
                lambda: _body(request),
                {name.lower(): request.headers.get(name) for name in self.protocol.headers},
            ),
            self.protocol,
        )


def _body(request) -> bytes:
    try:
        return request.body
    except RawPostDataException:  # a form body Django's middleware already parsed
        raise InvalidInput(
            "The body is a form; send the v2 request as JSON (optionally followed by binary tensors).",
            code="invalid_request",
        ) from None


def _repository_request(request) -> dict:
    """The optional JSON object of a repository request (tritonclient sends an empty body to
    the index, a JSON object to load and unload)."""
    exchange.check_body_size(content_length(request.META.get("CONTENT_LENGTH")))
    body = codec.read_body(
        _body(request), request.headers.get("Content-Encoding"), limit=settings.MAX_REQUEST_BODY_BYTES
    )
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"The body is not valid JSON: {exc}. Send a JSON object, or nothing.", code="parse_error"
        ) from None
    if not isinstance(document, dict):
        raise InvalidInput("The body must be a JSON object, or empty.", code="invalid_request")
    return document


def _flag(document: dict, key: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key} must be true or false; received {value!r}.", code="invalid_request")
    return value


class RepositoryIndexView(V2View):
    """Every registered model version with its state; ``{"ready": true}`` lists only the ready."""

    scope = Scope.MANAGE

    def post(self, request, api_key):
        return v2_json(repository.repository_index(ready_only=_flag(_repository_request(request), "ready")))


class RepositoryLoadView(V2View):
    """Load the session of the name's latest ready version into this process's pool."""

    scope = Scope.MANAGE

    def post(self, request, api_key, name):
        parameters = _repository_request(request).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be a JSON object.', code="invalid_request")
        repository.repository_load(name, parameters)
        return Reply(200)


class RepositoryUnloadView(V2View):
    """Evict the sessions of every version of a name from this process's pool
    (inference.v2.repository.repository_unload)."""

    scope = Scope.MANAGE

    def post(self, request, api_key, name):
        _repository_request(request)
        repository.repository_unload(name)
        return Reply(200)


@csrf_exempt
def unknown_route(request, *args, **kwargs):
    reply = v2_json(
        {
            "error": f"No route {request.method} {request.path}. The /v2 routes: /v2, /v2/health/live, "
            "/v2/health/ready, /v2/models/{name}[/versions/{version}][/ready|/config|/infer], /v2/repository/index, "
            "/v2/repository/models/{name}/load|unload.",
            "code": "not_found",
        },
        404,
    )
    return as_response(reply)
