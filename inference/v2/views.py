"""The /v2 routes (Open Inference Protocol v2 over REST; ../shared/REFERENCE.md §1).

Plain Django views, not DRF: the body is read here (tritonclient sends no Content-Type, and
binary bodies are not JSON), and every answer, errors included, is the protocol's own JSON:
``{"error": "<what to fix>", "code": "<rule>"}`` (clients read "error"; "code" is ours).

Access: an API key as ``Authorization: Bearer <key>``; scope ``predict`` for model metadata,
model ready and infer, ``manage`` for the repository extension. The health probes and the
server metadata are open: the metadata names only the server, its version and extensions, and
clients ask for it before anything else. Sessions are not accepted on /v2, so CSRF (a defence
for cookie-authenticated requests) does not apply and the views are csrf_exempt.

Statuses: 400 bad request, 401/403 key or scope, 404 unknown model, version or route, 413 body
over the limit (also once decompressed), 415 an unsupported Content-Encoding, 503 a model that
is not ready (any status but ready, archived included) or a full queue (with Retry-After).

`infer_reply` is the whole infer exchange after routing; the WSGI fast path
(`inference.v2.fastpath`) calls it too, so both answer alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.http import HttpResponse, RawPostDataException
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from access import throttling
from access.keys import authenticate_key, key_from_header
from access.models import APIKey, Scope
from core import request_log, shutdown
from core.exceptions import DomainError, NotFound
from inference import services
from inference.errors import InvalidInput, ModelArchived, ModelIntegrityError, ModelNotReady
from inference.serving import serving_cache
from inference.sessions import get_pool
from inference.v2 import codec
from inference.views import check_body_size
from modelforge_site import health
from registry.errors import ModelNotFound
from registry.models import MLModel

logger = logging.getLogger(__name__)

SERVER_NAME = "modelforge"
EXTENSIONS = ("binary_tensor_data", "model_repository")
JSON = "application/json"

# Models that exist but are not served answer 503, as the protocol has it for "not ready".
_NOT_SERVED = (ModelNotReady, ModelArchived, ModelIntegrityError)

# Triton's repository states for our statuses (ready means servable: sessions load on use).
_STATES = {
    MLModel.Status.READY: "READY",
    MLModel.Status.VALIDATING: "LOADING",
}


@dataclass
class Reply:
    """An answer, independent of Django, so the WSGI fast path can send it too."""

    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def as_response(self) -> HttpResponse:
        content_type = self.headers.pop("Content-Type", JSON if self.content else "text/plain; charset=utf-8")
        response = HttpResponse(self.content, status=self.status, content_type=content_type)
        for name, value in self.headers.items():
            response[name] = value
        return response


def json_reply(document, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(document), {"Content-Type": JSON})


def error_reply(exc: Exception) -> Reply:
    """Any failure as ``{"error", "code"}`` with its status; unexpected ones are logged, 500."""
    if isinstance(exc, exceptions.APIException):  # authentication and scope, from access.keys
        codes = exc.get_codes()
        reply = json_reply(
            {"error": str(exc.detail), "code": codes if isinstance(codes, str) else exc.default_code}, exc.status_code
        )
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            reply.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return reply
    if isinstance(exc, DomainError):
        status = 503 if isinstance(exc, _NOT_SERVED) else exc.status_code
        reply = json_reply({"error": exc.detail, "code": exc.code}, status)
        if getattr(exc, "retry_after", None):
            reply.headers["Retry-After"] = str(exc.retry_after)
        return reply
    logger.exception("v2 request failed")
    return json_reply({"error": "An unexpected error occurred; it has been logged.", "code": "server_error"}, 500)


def authenticate(authorization: str | None, scope: str) -> APIKey:
    raw = key_from_header(authorization or "")
    if raw is None:
        raise exceptions.NotAuthenticated(
            "This route needs an API key: send `Authorization: Bearer <key>` (keys come from "
            "`manage.py create_api_key` or the admin).",
            code="not_authenticated",
        )
    api_key = authenticate_key(raw)
    if not api_key.has_scope(scope):
        raise exceptions.PermissionDenied(f"This API key lacks the '{scope}' scope needed here.", code="missing_scope")
    return api_key


def resolve_model(name: str, version: str | None) -> MLModel:
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


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def infer_reply(
    *,
    authorization: str | None,
    name: str,
    version: str | None,
    content_length: int,
    read_body: Callable[[], bytes],
    header_length: str | None,
    content_encoding: str | None,
) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer, from the key to the response body."""
    started = time.perf_counter()
    try:
        api_key = authenticate(authorization, Scope.PREDICT)
        throttling.check("predict", api_key.prefix)
        model = resolve_model(name, version)
        request_log.bind_model(model)
        check_body_size(content_length)
        body = codec.read_body(read_body(), content_encoding, limit=settings.MAX_REQUEST_BODY_BYTES)
        request = codec.parse_infer_request(
            body,
            header_length,
            inputs=model.input_schema,
            outputs=model.output_schema,
            allow_non_finite=model.allow_non_finite,
            max_elements=settings.MAX_INPUT_ELEMENTS,
            max_depth=settings.MAX_JSON_DEPTH,
        )
        timings = services.Timings(parse=_ms_since(started))
        feeds = request.feeds
        outcome = services.infer(
            model=model,
            feeds=feeds,
            skip_cache=request.skip_cache,
            api_key=api_key,
            history_input=lambda: codec.feeds_as_json(feeds, model.input_schema),
            input_size=len(body),
            requested_outputs=[output.name for output in request.outputs],
            # JSON renders NaN as null anyway; binary outputs must be the exact values.
            exact=request.wants_binary,
            timings=timings,
        )
        request_log.bind_outcome(outcome)

        serialize_started = time.perf_counter()
        values = outcome.values if outcome.values is not None else outcome.output_data
        tensors = [
            (output, codec.output_array(output.datatype, values[output.name], outcome.shapes.get(output.name)))
            for output in request.outputs
        ]
        content, json_size = codec.encode_infer_response(
            model_name=model.name, model_version=model.version, request_id=request.id, outputs=tensors
        )
        timings.serialize = _ms_since(serialize_started)
    except Exception as exc:
        return error_reply(exc)
    headers = {
        "Content-Type": JSON if json_size is None else "application/octet-stream",
        "X-Cache": "HIT" if outcome.cached else "MISS",
        "Server-Timing": timings.header(),
    }
    if json_size is not None:
        headers[codec.HEADER_LENGTH] = str(json_size)
    return Reply(200, content, headers)


def _content_length(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


@method_decorator(csrf_exempt, name="dispatch")
class V2View(View):
    """Routes answer with a `Reply`; errors of every kind become the protocol's JSON errors.

    ``scope`` is the API key scope a route needs (None: open). Handlers take
    ``(request, api_key, **route_kwargs)``.
    """

    scope: str | None = Scope.PREDICT

    def dispatch(self, request, *args, **kwargs):
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        allowed = ", ".join(self._allowed_methods())
        if method == "options":
            return Reply(200, headers={"Allow": allowed}).as_response()
        if handler is None:
            reply = json_reply(
                {"error": f"{request.method} is not allowed on {request.path}; use {allowed}.", "code": "bad_method"},
                405,
            )
            reply.headers["Allow"] = allowed
            return reply.as_response()
        try:
            api_key = authenticate(request.headers.get("Authorization"), self.scope) if self.scope else None
            reply = handler(request, api_key, *args, **kwargs)
        except Exception as exc:
            reply = error_reply(exc)
        return reply.as_response()


class ServerLiveView(V2View):
    scope = None

    def get(self, request, api_key):
        return Reply(200)


class ServerReadyView(V2View):
    """Ready: the database answers and every migration is applied (as /api/v1/ready)."""

    scope = None

    def get(self, request, api_key):
        if shutdown.stopping.is_set():
            return json_reply({"error": "Not ready: the server is shutting down.", "code": "shutting_down"}, 503)
        ok, detail = health.check_database()
        if ok:
            ok, detail = health.check_migrations()
        if not ok:
            return json_reply({"error": f"Not ready: database {detail}.", "code": "not_ready"}, 503)
        return Reply(200)


class ServerMetadataView(V2View):
    scope = None

    def get(self, request, api_key):
        return json_reply({"name": SERVER_NAME, "version": settings.MODELFORGE_VERSION, "extensions": list(EXTENSIONS)})


class ModelMetadataView(V2View):
    def get(self, request, api_key, name, version=None):
        model = resolve_model(name, version)
        ready_versions = list(MLModel.objects.named(name).ready().newest_first().values_list("version", flat=True))
        return json_reply(
            {
                "name": model.name,
                "versions": ready_versions,
                "platform": codec.PLATFORM,
                "inputs": [codec.tensor_metadata(entry) for entry in codec.tensor_entries(model.input_schema)],
                "outputs": [codec.tensor_metadata(entry) for entry in codec.tensor_entries(model.output_schema)],
            }
        )


class ModelReadyView(V2View):
    def get(self, request, api_key, name, version=None):
        resolve_model(name, version)
        return Reply(200)


class InferView(V2View):
    scope = None  # infer_reply checks the key itself, as the fast path calls it directly

    def post(self, request, api_key, name, version=None):
        return infer_reply(
            authorization=request.headers.get("Authorization"),
            name=name,
            version=version,
            content_length=_content_length(request.META.get("CONTENT_LENGTH")),
            read_body=lambda: _body(request),
            header_length=request.headers.get(codec.HEADER_LENGTH),
            content_encoding=request.headers.get("Content-Encoding"),
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
    check_body_size(_content_length(request.META.get("CONTENT_LENGTH")))
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
        ready_only = _flag(_repository_request(request), "ready")
        rows = MLModel.objects.order_by("name", "-version_key", "-created_at")
        if ready_only:
            rows = rows.ready()
        index = []
        for name, version, status, error_code in rows.values_list("name", "version", "status", "error_code"):
            reason = ""
            if status != MLModel.Status.READY:
                reason = status + (f": {error_code}" if error_code else "")
            index.append(
                {"name": name, "version": version, "state": _STATES.get(status, "UNAVAILABLE"), "reason": reason}
            )
        return json_reply(index)


class RepositoryLoadView(V2View):
    """Load the session of the name's latest ready version into this process's pool."""

    scope = Scope.MANAGE

    def post(self, request, api_key, name):
        parameters = _repository_request(request).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput('"parameters" must be a JSON object.', code="invalid_request")
        if "config" in parameters or any(key.startswith("file:") for key in parameters):
            raise InvalidInput(
                "Loading with a config or files is not supported: models are registered through "
                "/api/v1/models (upload and validation), then loaded by name.",
                code="unsupported_parameter",
            )
        get_pool().get(resolve_model(name, None))
        return Reply(200)


class RepositoryUnloadView(V2View):
    """Evict the sessions of every version of a name from this process's pool. The model stays
    registered and servable: the next request loads it again. (Sessions are keyed by file, so
    another name registered with the very same bytes loses its session too, and reloads it.)"""

    scope = Scope.MANAGE

    def post(self, request, api_key, name):
        _repository_request(request)
        files = set(MLModel.objects.named(name).exclude(file_sha256="").values_list("file_sha256", flat=True))
        if not files and not MLModel.objects.named(name).exists():
            raise NotFound(f"Unknown model '{name}'.", code="model_not_found")
        pool = get_pool()
        for sha256 in files:
            pool.evict(sha256)
        return Reply(200)


@csrf_exempt
def unknown_route(request, *args, **kwargs):
    return json_reply(
        {
            "error": f"No route {request.method} {request.path}. The /v2 routes: /v2, /v2/health/live, "
            "/v2/health/ready, /v2/models/{name}[/versions/{version}][/ready|/infer], /v2/repository/index, "
            "/v2/repository/models/{name}/load|unload.",
            "code": "not_found",
        },
        404,
    ).as_response()
