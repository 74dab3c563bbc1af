"""The body gate: no byte of a request body is read before the request is known to be admitted.

Django parses a multipart body wherever ``request.POST`` is first touched (the CSRF check,
``DomainErrorMiddleware``), which is before a view checks the key, the scope or the method;
and the upload handlers spool file fields to the model volume as they arrive. So this WSGI
layer, in front of Django (modelforge_site.wsgi; the serving fast path in front of it reads
its bodies only once the exchange admitted the caller), decides before anything reads:

1. the route (Django's resolver): unknown → withheld;
2. the method the view accepts (DRF views and /v2 views): not accepted → withheld;
3. the credential the route needs: a Bearer key with the route's scope
   (``access.principals.authorize``, the check every door makes, with
   ``access.permissions.required_scope``; /v2 views: their ``scope``), or, where
   sessions are accepted (not on /v2), an authenticated session (Django's own session and
   ``auth.get_user``: what it permits is left to the views). Open routes (the health probes,
   the admin login) get at most OPEN_BODY_MAX_BYTES.

A withheld body is never read: Django gets the request with an empty body and answers with
its usual refusal (401 ``not_authenticated`` or ``invalid_api_key``, 403 ``missing_scope``,
404, 405, in ``{"code", "detail"}`` or the /v2 ``{"error", "code"}`` shape; the admin redirects
to its login), with ``Connection: close`` so that the unread body is dropped with the
connection. Rendering the refusal in Django keeps one copy of each check's message and shape;
should this gate ever withhold a body Django would accept, the view sees an empty body and
answers 400, never acting on data it did not get.

An admitted body is read through core.body_reading (a deadline, a rate, a few read slots).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.views import redirect_to_login
from django.core.handlers.wsgi import get_path_info
from django.http import parse_cookie
from django.urls import Resolver404, resolve, reverse
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from access.permissions import required_scope
from access.principals import Credential, authorize
from core.body_reading import UNREAD, BodyInput, closes_itself, content_length
from inference.v2.views import V2View

# Open routes (no credential) take small forms only: the admin login, nothing with files.
OPEN_BODY_MAX_BYTES = 64 * 1024
# The admin's open routes (url names in the `admin` namespace) that accept an anonymous body.
_OPEN_ADMIN_ROUTES = frozenset({"login"})


class BodyGate:
    """WSGI middleware: withholds bodies of requests that will be refused (see the module)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH") or ""
        if (not length or length == "0") and "HTTP_TRANSFER_ENCODING" not in environ:
            return self.app(environ, start_response)  # no body: nothing to gate
        body = None
        if admits(environ):
            body = environ["wsgi.input"] = BodyInput(environ["wsgi.input"], content_length(length), environ)
        else:
            withhold(environ)
            path = get_path_info(environ)
            if path.startswith("/admin/"):
                # What admin_view answers without a staff session: its login page. (Django with
                # the body withheld would fail the form's CSRF check first: a worse page.)
                location = redirect_to_login(path, reverse("admin:login"))["Location"]
                headers = [("Location", location), ("Content-Length", "0")]
                if not closes_itself(environ):
                    headers.append(("Connection", "close"))
                start_response("302 Found", headers)
                return [b""]

        def closing_start_response(status, headers, exc_info=None):
            # Withheld, cut off, or admitted and answered before the view read it all (throttled,
            # refused by a permission, too large): granian cannot reuse the connection, and would
            # close it without telling the client (bench/keepalive_race.py).
            if (environ.get(UNREAD) or (body is not None and body.unread)) and not closes_itself(environ):
                headers = [*(h for h in headers if h[0].lower() != "connection"), ("Connection", "close")]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.app(environ, closing_start_response)


def withhold(environ) -> None:
    """Hand the request on without its body, and close the connection after the answer."""
    environ["wsgi.input"] = _EMPTY
    environ["CONTENT_LENGTH"] = "0"
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ[UNREAD] = True


def admits(environ) -> bool:
    """Whether the request's body may be read: its route, method and credential would pass."""
    path = get_path_info(environ)
    try:
        match = resolve(path)
    except Resolver404:
        return False
    method = environ.get("REQUEST_METHOD", "GET").lower()
    view = match.func
    drf_view = getattr(view, "cls", None)
    plain_view = getattr(view, "view_class", None)
    if drf_view is not None and issubclass(drf_view, APIView):
        return _admits_drf(environ, drf_view, getattr(view, "initkwargs", {}), getattr(view, "actions", None), method)
    if plain_view is not None and issubclass(plain_view, V2View):
        return _admits_v2(environ, plain_view, method)
    # Plain Django views (the admin, the console): a staff session (what admin_view asks), except
    # the admin's login form; anything else (the /v2 catch-all 404) reads no body anyway.
    if match.namespace == "admin" and match.url_name in _OPEN_ADMIN_ROUTES:
        return content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
    user = _session_user(environ)
    return user is not None and user.is_active and user.is_staff


def _admits_drf(environ, view_class, initkwargs: dict, actions: dict | None, method: str) -> bool:
    if actions is not None:  # a ViewSet route: the methods its router mapped, and OPTIONS
        allowed = {*actions, "options"} | ({"head"} if "get" in actions else set())
    else:
        allowed = {name for name in view_class.http_method_names if hasattr(view_class, name)}
        allowed |= {"head"} if "get" in allowed else set()
    if method not in allowed:
        return False
    if any(permission is AllowAny for permission in view_class.permission_classes):
        return content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
    credential = Credential.from_header(environ.get("HTTP_AUTHORIZATION"))
    if credential.raw_key is None:  # as DRF: no Bearer key, then the session (what it permits is the view's call)
        return _session_user(environ) is not None
    view = view_class(**initkwargs)
    view.action = actions.get(method) if actions else None
    return _authorized(credential, required_scope(SimpleNamespace(method=method.upper()), view))


def _admits_v2(environ, view_class, method: str) -> bool:
    allowed = {name for name in view_class.http_method_names if hasattr(view_class, name)}
    if method not in allowed | ({"head"} if "get" in allowed else set()):
        return False
    if view_class.scope is None:
        return content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
    credential = Credential.from_header(environ.get("HTTP_AUTHORIZATION"))
    return credential.raw_key is not None and _authorized(credential, view_class.scope)  # /v2 takes keys only


def _authorized(credential: Credential, scope: str) -> bool:
    """Whether the key may use the route (access.principals.authorize, as its view will ask)."""
    try:
        authorize(credential, scope=scope, permissions=None)
    except (exceptions.AuthenticationFailed, exceptions.PermissionDenied):
        return False
    return True


def _session_user(environ):
    """The authenticated user of the request's session, or None: Django's own session store and
    auth.get_user, as SessionMiddleware and AuthenticationMiddleware find it."""
    cookie = environ.get("HTTP_COOKIE")
    if not cookie or settings.SESSION_COOKIE_NAME not in cookie:
        return None
    key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = auth.get_user(SimpleNamespace(session=session))
    return user if user.is_authenticated else None


class _Empty:
    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""


_EMPTY = _Empty()
