"""A WSGI fast path for the serving routes, in front of Django.

Django's middleware, URL resolution and DRF dispatch cost more per request than a small model's
inference itself (measured in docs/performance.md). This wrapper answers the routes of the
serving table (inference.routes: /api/v1 predict by id and by name, /v2 infer) itself: the same
URL patterns, the same exchange (inference.exchange) and protocols as the Django views, adding
the headers Django's security middleware would. Anything it is not sure to handle exactly as
Django would (no Bearer key, a host not allowed, an HTTP request that must be redirected to
HTTPS, no Content-Length) goes to Django, whose views are doors of the same exchange.
Requests it answers get their X-Request-ID, log line and metrics from core.request_log
(begin_inference here, finish in _respond), as RequestLogMiddleware gives Django's.
"""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host

from access.keys import key_from_header
from access.principals import Credential
from core import body_reading, request_log
from inference import exchange
from inference.routes import ROUTES

_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
# What a serving route's path ends with: a cheap test before any pattern is matched.
_ENDINGS = ("/predict", "/predict/", "/infer", "/infer/")
# Each route's protocol headers as (the name the protocol reads, the WSGI environ key), once.
_PROTOCOL_HEADERS = {
    route.name: tuple((name.lower(), "HTTP_" + name.upper().replace("-", "_")) for name in route.protocol.headers)
    for route in ROUTES
}


class PredictFastPath:
    def __init__(self, django_app):
        self.django_app = django_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST":
            path = environ.get("PATH_INFO", "")
            if path.endswith(_ENDINGS):
                for route in ROUTES:
                    kwargs = route.match(path)
                    if kwargs is not None:
                        if self._eligible(environ):
                            return self._serve(environ, start_response, route, kwargs)
                        break
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

    # --- the door ------------------------------------------------------------------------
    def _serve(self, environ, start_response, route, kwargs: dict):
        request_log.begin_inference(environ)
        environ[body_reading.UNREAD] = True  # until read_body has it all
        length = int(environ["CONTENT_LENGTH"])
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""))) if environ.get("QUERY_STRING") else {}
        reply = exchange.answer(
            Credential.from_header(environ["HTTP_AUTHORIZATION"]),
            route.ref(kwargs, query),
            exchange.Incoming(
                length,
                lambda: body_reading.read_body(environ, length),
                {name: environ.get(key) for name, key in _PROTOCOL_HEADERS[route.name]},
            ),
            route.protocol,
        )
        return self._respond(start_response, reply, environ)

    @staticmethod
    def _respond(start_response, reply: exchange.Reply, environ):
        headers, content = reply.headers, reply.content
        # The headers SecurityMiddleware and XFrameOptionsMiddleware add to every Django response.
        for name, value in _security_headers(hsts=bool(settings.SECURE_HSTS_SECONDS) and _is_secure(environ)):
            headers.setdefault(name, value)
        headers["Content-Length"] = str(len(content))
        if (
            environ[body_reading.UNREAD]
            and environ["CONTENT_LENGTH"] != "0"
            and not body_reading.closes_itself(environ)
        ):
            headers["Connection"] = "close"  # refused before its body was read: drop the rest with the connection
        # The request's id, its log line and its metrics (RequestLogMiddleware's work in Django).
        headers[request_log.HEADER] = request_log.finish(reply.status, retry_after="Retry-After" in headers)
        start_response(_STATUS_LINES.get(reply.status, f"{reply.status} Error"), list(headers.items()))
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
