"""The body gate: no byte of a request body is read before the request is known to be admitted.

Django parses a multipart body wherever ``request.POST`` is first touched (the CSRF check,
``DomainErrorMiddleware``), which is before a view checks the key, the scope or the method;
and the upload handlers spool file fields to the model volume as they arrive. So this WSGI
layer, in front of Django (modelforge_site.wsgi; the predict fast path in front of it reads
its own bodies only after its own key check), decides before anything reads:

1. the route (Django's resolver): unknown → withheld;
2. the method the view accepts (DRF views and /v2 views): not accepted → withheld;
3. the credential the route needs: a Bearer key (``access.keys.authenticate_key``) with the
   route's scope (``access.permissions.required_scope``; /v2 views: their ``scope``), or, where
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

An admitted body is read through ``BodyInput``: at most BODY_READ_SLOTS threads per process wait
on bodies at once (the others are answered 503 ``server_busy`` with Retry-After, so threads
stay free for the probes and bodiless requests), and a body must arrive within
BODY_READ_TIMEOUT_SECONDS plus one second per BODY_MIN_RATE_BYTES_PER_SECOND bytes of its
Content-Length, else 408 ``request_timeout``. granian's ``wsgi.input.read(n)`` blocks until n
bytes have come and nothing can interrupt it, so the blocking read runs on one of a few reader
threads (at most BODY_READERS_MAX per process) while the serving thread waits with the
deadline: a stalled client costs a reader thread until it sends or hangs up, never a serving
thread past its deadline.
"""

from __future__ import annotations

import threading
import time
from http import HTTPStatus
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.views import redirect_to_login
from django.core.handlers.wsgi import get_path_info
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import parse_cookie
from django.urls import Resolver404, resolve, reverse
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from access.keys import authenticate_key, key_from_header
from access.models import Scope
from access.permissions import required_scope
from core.exceptions import DomainError, ServiceUnavailable
from inference.v2.views import InferView, V2View

# The environ key set when the body is left unread: responses then carry `Connection: close`.
UNREAD = "modelforge.body_unread"
# Open routes (no credential) take small forms only: the admin login, nothing with files.
OPEN_BODY_MAX_BYTES = 64 * 1024
# How long a read waits for a free slot before 503: slots held by bodies that do arrive are
# free again within microseconds; slots held by slow ones are not worth waiting for.
SLOT_WAIT_SECONDS = 0.1
# The admin's open routes (url names in the `admin` namespace) that accept an anonymous body.
_OPEN_ADMIN_ROUTES = frozenset({"login"})


class RequestTimeout(DomainError):
    status_code = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"


class BodyReadersBusy(ServiceUnavailable):
    code = "server_busy"
    retry_after = 1


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
            body = environ["wsgi.input"] = BodyInput(environ["wsgi.input"], _content_length(length), environ)
        else:
            withhold(environ)
            path = get_path_info(environ)
            if path.startswith("/admin/"):
                # What admin_view answers without a staff session: its login page. (Django with
                # the body withheld would fail the form's CSRF check first: a worse page.)
                location = redirect_to_login(path, reverse("admin:login"))["Location"]
                start_response("302 Found", [("Location", location), ("Content-Length", "0"), ("Connection", "close")])
                return [b""]

        def closing_start_response(status, headers, exc_info=None):
            # Withheld, cut off, or admitted and answered before the view read it all (throttled,
            # refused by a permission, too large): granian cannot reuse the connection, and would
            # close it without telling the client (bench/keepalive_race.py).
            if environ.get(UNREAD) or (body is not None and body.unread):
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
        return _content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
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
    if all(permission is AllowAny for permission in view_class.permission_classes):
        return _content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
    raw = key_from_header(environ.get("HTTP_AUTHORIZATION", ""))
    if raw is None:  # as DRF: no Bearer key, then the session (what it permits is the view's call)
        return _session_user(environ) is not None
    view = view_class(**initkwargs)
    view.action = actions.get(method) if actions else None
    return _key_has_scope(raw, required_scope(SimpleNamespace(method=method.upper()), view))


def _admits_v2(environ, view_class, method: str) -> bool:
    allowed = {name for name in view_class.http_method_names if hasattr(view_class, name)}
    if method not in allowed | ({"head"} if "get" in allowed else set()):
        return False
    # InferView checks its key itself (the fast path calls the same exchange): it needs predict.
    scope = Scope.PREDICT if issubclass(view_class, InferView) else view_class.scope
    if scope is None:
        return _content_length(environ.get("CONTENT_LENGTH")) <= OPEN_BODY_MAX_BYTES
    raw = key_from_header(environ.get("HTTP_AUTHORIZATION", ""))
    return raw is not None and _key_has_scope(raw, scope)  # /v2 takes keys only


def _key_has_scope(raw: str, scope: str) -> bool:
    try:
        return authenticate_key(raw).has_scope(scope)
    except exceptions.AuthenticationFailed:
        return False


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


def _content_length(value) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


class _Empty:
    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""


_EMPTY = _Empty()


# --- admitted bodies: deadline, rate and slots -------------------------------------------------


class BodyInput:
    """wsgi.input for an admitted body: reads under the body's deadline, through a reader thread,
    holding one of the process's read slots while it waits."""

    __slots__ = ("_stream", "_left", "_deadline", "_environ")

    def __init__(self, stream, length: int, environ):
        self._stream = stream
        self._left = length
        self._deadline = (
            time.monotonic() + settings.BODY_READ_TIMEOUT_SECONDS + length / settings.BODY_MIN_RATE_BYTES_PER_SECOND
        )
        self._environ = environ

    @property
    def unread(self) -> bool:
        """Whether some of the body was never read."""
        return self._left > 0

    def read(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        if size == 0:
            return b""
        data = self._read(self._stream.read, size)
        self._left -= len(data)
        if not data:
            self._left = 0  # the client closed: nothing more will come
        return data

    def _read(self, read, size: int) -> bytes:
        try:
            return _read(read, size, self._deadline)
        except DomainError:
            self._environ[UNREAD] = True  # the rest of the body is never read: close after answering
            raise

    def readline(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        line = self._read(self._stream.readline, size)
        self._left -= len(line)
        return line


def read_body(environ, length: int) -> bytes:
    """The whole body of a request already admitted (the fast path's own key check passed).
    Until it is read, the request counts as unread (`Connection: close` on the answer)."""
    if length <= 0:
        return b""
    body = BodyInput(environ["wsgi.input"], length, environ).read(length)
    environ[UNREAD] = len(body) < length
    return body


_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


@receiver(setting_changed)
def _resize_slots(*, setting, **kwargs) -> None:
    global _slots
    if setting == "BODY_READ_SLOTS":
        _slots = None


def _read_slots() -> threading.BoundedSemaphore:
    global _slots
    if _slots is None:
        with _slots_lock:
            if _slots is None:
                _slots = threading.BoundedSemaphore(settings.BODY_READ_SLOTS)
    return _slots


def _read(read, size: int, deadline: float) -> bytes:
    slots = _read_slots()
    if not slots.acquire(timeout=SLOT_WAIT_SECONDS):
        raise BodyReadersBusy(
            f"Too many request bodies are arriving at once (BODY_READ_SLOTS={settings.BODY_READ_SLOTS} per "
            "process); retry after Retry-After seconds."
        )
    try:
        job = _pool.submit(read, size)
        if job is None:
            raise BodyReadersBusy(
                f"Every body reader of this process waits on a client (BODY_READERS_MAX={settings.BODY_READERS_MAX}); "
                "retry after Retry-After seconds."
            )
        if not job.done.acquire(timeout=max(deadline - time.monotonic(), 0)):
            job.abandoned = True
            raise RequestTimeout(
                "The request body arrived too slowly: it must come within "
                f"{settings.BODY_READ_TIMEOUT_SECONDS:g}s plus one second per "
                f"{settings.BODY_MIN_RATE_BYTES_PER_SECOND} bytes (BODY_READ_TIMEOUT_SECONDS, "
                "BODY_MIN_RATE_BYTES_PER_SECOND). Send it again, faster."
            )
        if job.error is not None:
            raise job.error
        return job.data
    finally:
        slots.release()


class _Job:
    __slots__ = ("read", "size", "done", "data", "error", "abandoned")

    def __init__(self, read, size: int):
        self.read, self.size = read, size
        self.done = threading.Lock()
        self.done.acquire()
        self.data, self.error, self.abandoned = b"", None, False


class _Reader(threading.Thread):
    """Runs one blocking read at a time; back in the pool's idle list when it returns."""

    def __init__(self, pool: _ReaderPool):
        super().__init__(name="body-reader", daemon=True)
        self.pool = pool
        self.go = threading.Lock()
        self.go.acquire()
        self.job: _Job | None = None

    def run(self) -> None:
        while True:
            self.go.acquire()
            job, self.job = self.job, None
            try:
                job.data = job.read(job.size)
            except BaseException as exc:  # handed to the waiting thread, which raises it
                job.error = exc
            job.done.release()
            job = None  # an abandoned job's stream goes now: the server can drop the connection
            self.pool.idle(self)


class _ReaderPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Reader] = []
        self._count = 0

    def submit(self, read, size: int) -> _Job | None:
        with self._lock:
            if self._idle:
                reader = self._idle.pop()
            elif self._count < settings.BODY_READERS_MAX:
                self._count += 1
                reader = _Reader(self)
                reader.start()
            else:
                return None
        job = reader.job = _Job(read, size)
        reader.go.release()
        return job

    def idle(self, reader: _Reader) -> None:
        with self._lock:
            self._idle.append(reader)


_pool = _ReaderPool()
