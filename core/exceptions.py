"""The one domain-error hierarchy, and the error table every door renders from.

`problem(exc)` says once what an error means to a client (status, code, detail, Retry-After,
WWW-Authenticate); each protocol only shapes it: /api/v1 as ``{"code": "<machine-readable>",
"detail": "<what to fix>"}`` (validation errors add ``errors`` with the per-field messages), /v2
as ``{"error", "code"}`` (inference.v2.protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils.html import format_html
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import set_rollback


class DomainError(Exception):
    """A failure a client can act on. Subclasses fix the HTTP status and default code."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class PayloadTooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class ServiceUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"


def _first_message(detail: Any) -> str:
    """The first human message in a DRF error structure, prefixed by its field name."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "detail": detail, **extra}


@dataclass(frozen=True, slots=True)
class Problem:
    """An error as every protocol renders it: status, machine-readable code, what to fix, the
    headers that go with it (Retry-After, WWW-Authenticate) and extra fields (per-field errors)."""

    status: int
    code: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


BEARER_CHALLENGE = 'Bearer realm="api"'


def problem(exc: Exception) -> Problem | None:
    """The error table: what a domain error, or an error of Django or DRF, means to a client.
    None for anything else (an unexpected failure: a 500, logged where it is rendered).

    The /api/v1 body is ``{"code", "detail"}`` (`error_body`); /v2 reads the same table with
    its own shape (inference.v2.protocol).
    """
    if isinstance(exc, DomainError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        return Problem(exc.status_code, exc.code, exc.detail, headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if not isinstance(exc, exceptions.APIException):
        return None
    headers = {}
    if exc.status_code == 401:
        # DRF sets auth_header from the view's first authenticator; other doors take ours.
        headers["WWW-Authenticate"] = getattr(exc, "auth_header", None) or BEARER_CHALLENGE
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid"
        codes = exc.get_codes()
        if isinstance(codes, dict) and len(codes) == 1:
            # A single failing field (of a nested object too): surface its own code when it is a specific one.
            (only,) = codes.values()
            while isinstance(only, dict) and len(only) == 1:
                (only,) = only.values()
            first = only[0] if isinstance(only, list) and only else only
            if isinstance(first, str) and first not in {"invalid", "required", "null", "blank"}:
                code = first
        return Problem(exc.status_code, code, _first_message(exc.detail), headers, {"errors": exc.detail})
    code = exc.get_codes()
    return Problem(exc.status_code, code if isinstance(code, str) else exc.default_code, str(exc.detail), headers)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's exception handler: every error of /api/v1 as ``{"code", "detail"}`` (`problem`)."""
    found = problem(exc)
    if found is None:
        return None
    set_rollback()
    return Response(
        error_body(found.code, found.detail, **found.extra), status=found.status, headers=found.headers or None
    )


class DomainErrorMiddleware:
    """Renders a DomainError raised outside DRF (e.g. an over-size upload to the admin).

    The upload handler runs wherever a request body is parsed, including plain Django views.
    Listed before CsrfViewMiddleware so that its process_view parses uploads first.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # Parse a multipart body here, before the CSRF check reads it: an over-size upload
        # raised inside CsrfViewMiddleware would escape process_exception and end as a 500.
        if request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                request.POST  # noqa: B018  (the access is the point: it parses the body)
            except DomainError as exc:
                return self.process_exception(request, exc)
            except MultiPartParserError:
                pass  # the view then sees an empty form and says which field is missing
        return None

    def process_exception(self, request, exception):
        if not isinstance(exception, DomainError):
            return None
        if request.path.startswith("/admin/"):
            page = format_html(
                '<h1>{}</h1><p>{}</p><p><a href="javascript:history.back()">Back</a></p>',
                exception.code,
                exception.detail,
            )
            return HttpResponse(page, status=exception.status_code, headers=_problem_headers(exception))
        return JsonResponse(
            error_body(exception.code, exception.detail),
            status=exception.status_code,
            headers=_problem_headers(exception),
        )


def _problem_headers(exc: DomainError) -> dict[str, str] | None:
    return problem(exc).headers or None
