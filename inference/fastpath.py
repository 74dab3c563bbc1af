"""A WSGI fast path for predict requests, in front of Django.

Django's middleware, URL resolution and DRF dispatch cost more per request than a small model's
inference itself (measured in docs/performance.md). This wrapper answers
`POST /api/v1/models/{id}/predict` and `POST /api/v1/models/by-name/{name}/predict` directly,
through the same key check (access.keys), the same model lookup (inference.serving), the same
body handling and predict service (inference.views.predict_from_body) and the same error
format, adding the headers Django's security middleware would. It answers /v2 infer
(`POST /v2/models/{name}[/versions/{version}]/infer`) the same way, through
inference.v2.fastpath and the /v2 view's own exchange. Anything it is not sure to
handle exactly as Django would (no Bearer key, a host not allowed, an HTTP request that must
be redirected to HTTPS, no Content-Length) goes to Django, whose views do the same work.
Requests it answers get their X-Request-ID, log line and metrics from core.request_log
(begin_inference here, finish in _respond), as RequestLogMiddleware gives Django's.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from urllib.parse import parse_qs

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from rest_framework import exceptions

from access import throttling
from access.keys import authenticate_key, key_from_header
from access.models import Scope
from core import request_log
from core.exceptions import DomainError, error_body
from inference.serving import serving_cache
from inference.v2.fastpath import INFER_PATH as V2_INFER_PATH
from inference.v2.fastpath import infer_from_environ as v2_infer_from_environ
from inference.views import check_body_size, predict_from_body
from modelforge_site import body_gate

logger = logging.getLogger(__name__)

_BY_ID = re.compile(r"^/api/v1/models/(?P<model_id>[0-9a-fA-F-]{36})/predict/?$")
_BY_NAME = re.compile(r"^/api/v1/models/by-name/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,99})/predict/?$")
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


class _Principal:
    """What services.predict needs to know of the caller: a key, never a staff user here."""

    is_staff = False
    pk = None


class PredictFastPath:
    def __init__(self, django_app):
        self.django_app = django_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            path = environ.get("PATH_INFO", "")
            if path.startswith("/api/v1/models/") and path.endswith(("/predict", "/predict/")):
                match = _BY_ID.match(path) or _BY_NAME.match(path)
                if match is not None and self._eligible(environ):
                    request_log.begin_inference(environ)
                    environ[body_gate.UNREAD] = True  # until read_body has it all
                    return self._predict(environ, start_response, match.groupdict())
            elif path.startswith("/v2/models/") and path.endswith(("/infer", "/infer/")):
                # /v2 infer: the same eligibility, the same exchange as its Django view.
                match = V2_INFER_PATH.match(path)
                if match is not None and self._eligible(environ):
                    request_log.begin_inference(environ)
                    environ[body_gate.UNREAD] = True
                    reply = v2_infer_from_environ(environ, match.groupdict())
                    return self._respond(start_response, reply.status, reply.content, reply.headers, environ)
        return self.django_app(environ, start_response)

    # --- routing -----------------------------------------------------------------------
    @staticmethod
    def _eligible(environ) -> bool:
        if key_from_header(environ.get("HTTP_AUTHORIZATION", "")) is None:
            return False  # session users (the browsable API) go through Django
        if not (environ.get("CONTENT_LENGTH") or "").isdigit():
            return False
        if settings.SECURE_SSL_REDIRECT and not _is_secure(environ):
            return False  # Django answers with the redirect
        return _host_allowed(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))

    # --- the exchange --------------------------------------------------------------------
    def _predict(self, environ, start_response, params: dict):
        try:
            api_key = authenticate_key(key_from_header(environ["HTTP_AUTHORIZATION"]))
            if not api_key.has_scope(Scope.PREDICT):
                raise exceptions.PermissionDenied(
                    f"This API key lacks the '{Scope.PREDICT}' scope needed here.", code="missing_scope"
                )
            throttling.check("predict", api_key.prefix)
            if "model_id" in params:
                model = serving_cache.by_id(params["model_id"])
            else:
                query = parse_qs(environ.get("QUERY_STRING", ""))
                version, alias = query.get("version", [None])[0], query.get("alias", [None])[0]
                model = serving_cache.by_name(params["name"], version or None, alias or None)
            length = int(environ["CONTENT_LENGTH"])
            check_body_size(length)
            body = body_gate.read_body(environ, length)
            content, headers = predict_from_body(model=model, body=body, api_key=api_key, user=_Principal())
            return self._respond(start_response, 200, content, headers, environ)
        except exceptions.APIException as exc:
            code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
            headers = {"Content-Type": "application/json"}
            if isinstance(exc, exceptions.AuthenticationFailed):
                headers["WWW-Authenticate"] = 'Bearer realm="api"'
            return self._respond(
                start_response, exc.status_code, orjson.dumps(error_body(code, str(exc.detail))), headers, environ
            )
        except DomainError as exc:
            content = orjson.dumps(error_body(exc.code, exc.detail))
            headers = {"Content-Type": "application/json"}
            if getattr(exc, "retry_after", None):  # throttled, a full queue, a busy model
                headers["Retry-After"] = str(exc.retry_after)
            return self._respond(start_response, exc.status_code, content, headers, environ)
        except Exception:
            logger.exception("predict failed", extra={"path": environ.get("PATH_INFO")})
            content = orjson.dumps(error_body("server_error", "An unexpected error occurred; it has been logged."))
            return self._respond(start_response, 500, content, {"Content-Type": "application/json"}, environ)

    @staticmethod
    def _respond(start_response, status: int, content: bytes, headers: dict[str, str], environ):
        # The headers SecurityMiddleware and XFrameOptionsMiddleware add to every Django response.
        for name, value in _security_headers(hsts=bool(settings.SECURE_HSTS_SECONDS) and _is_secure(environ)):
            headers.setdefault(name, value)
        headers["Content-Length"] = str(len(content))
        if environ[body_gate.UNREAD] and environ["CONTENT_LENGTH"] != "0":
            headers["Connection"] = "close"  # refused before its body was read: drop the rest with the connection
        # The request's id, its log line and its metrics (RequestLogMiddleware's work in Django).
        headers[request_log.HEADER] = request_log.finish(status, retry_after="Retry-After" in headers)
        start_response(_STATUS_LINES.get(status, f"{status} Error"), list(headers.items()))
        return [content]


# What the settings say, worked out once: the allowed Host headers seen so far (at most
# _HOSTS_KEPT, so random Host headers cannot grow it) and the security headers. Both are
# forgotten when a setting changes (override_settings in the tests).
_HOSTS_KEPT = 64
_hosts: dict[str, bool] = {}
_headers: dict[bool, tuple[tuple[str, str], ...]] = {}  # by whether HSTS is sent


@receiver(setting_changed)
def _forget_settings(**kwargs) -> None:
    _hosts.clear()
    _headers.clear()


def _host_allowed(host: str) -> bool:
    allowed = _hosts.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host)
        hosts = settings.ALLOWED_HOSTS
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        allowed = bool(domain) and validate_host(domain, hosts)
        if len(_hosts) < _HOSTS_KEPT:
            _hosts[host] = allowed
    return allowed


def _security_headers(*, hsts: bool) -> tuple[tuple[str, str], ...]:
    headers = _headers.get(hsts)
    if headers is None:
        found = [
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", settings.SECURE_REFERRER_POLICY or "same-origin"),
            ("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY or "same-origin"),
            ("X-Frame-Options", settings.X_FRAME_OPTIONS),
        ]
        if hsts:
            value = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                value += "; includeSubDomains"
            if settings.SECURE_HSTS_PRELOAD:
                value += "; preload"
            found.append(("Strict-Transport-Security", value))
        headers = _headers[hsts] = tuple(found)
    return headers


def _is_secure(environ) -> bool:
    if environ.get("wsgi.url_scheme") == "https":
        return True
    header = settings.SECURE_PROXY_SSL_HEADER
    return bool(header) and environ.get(header[0], "").split(",")[0].strip() == header[1]
