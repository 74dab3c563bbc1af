"""Request ids and the one log line per request, for Django and for the WSGI fast path alike.

Every response carries ``X-Request-ID``: the client's own when it sent a sane one (1-128
characters of letters, digits and ``._:+=/-``), else a new random id. While a request is
handled (and until the thread's next request), the id sits in a context variable, and
``RequestIdFilter`` (on the log handler) puts it on every log record emitted meanwhile, from
any logger; outside requests it is ``-``.

When the response is ready, ``finish`` writes one line to the ``modelforge.request`` logger:
method, path, status, duration, the key's name, and for predict and /v2 infer requests the
model, version, cache outcome, queue and compute time; and it hands predict and infer
requests to ``inference.metrics`` (Prometheus counters and the per-minute statistics). The
Django side is ``RequestLogMiddleware``; ``inference.fastpath`` calls ``begin`` and
``finish`` itself, as its requests never reach Django.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass

from core import ids

HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
_INFERENCE_PATH = re.compile(r"^/(api/v1/models/.+/predict|v2/models/.+/infer)/?$")

logger = logging.getLogger("modelforge.request")


@dataclass(slots=True)
class RequestContext:
    id: str
    method: str
    path: str
    started: float
    inference: bool  # a predict or /v2 infer request: counted per model version
    key_name: str | None = None
    model: object | None = None  # the MLModel the request resolved to
    cached: bool | None = None  # True a cache hit, False a miss, None no cache lookup
    queue_ms: float | None = None
    compute_ms: float | None = None
    finished: bool = False


_current: ContextVar[RequestContext | None] = ContextVar("modelforge_request", default=None)


def request_id_from(incoming: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    if incoming and _VALID_ID.fullmatch(incoming):
        return incoming
    return ids.uuid4().hex


def begin(*, method: str, path: str, incoming_id: str | None, inference: bool | None = None) -> RequestContext:
    """Start tracking a request in this context (thread); returns its context."""
    context = RequestContext(
        id=request_id_from(incoming_id),
        method=method,
        path=path,
        started=time.perf_counter(),
        inference=bool(_INFERENCE_PATH.match(path)) if inference is None else inference,
    )
    _current.set(context)
    return context


def begin_inference(environ) -> RequestContext:
    """Start tracking a predict or infer request answered from its WSGI environ."""
    return begin(
        method=environ.get("REQUEST_METHOD", ""),
        path=environ.get("PATH_INFO", ""),
        incoming_id=environ.get("HTTP_X_REQUEST_ID"),
        inference=True,
    )


def current() -> RequestContext | None:
    """The request being handled in this context, if any."""
    context = _current.get()
    return None if context is None or context.finished else context


def bind_key(api_key) -> None:
    """The request is made with this (verified) API key."""
    context = current()
    if context is not None:
        context.key_name = api_key.name


def bind_inference() -> None:
    """The request is a prediction, whichever path it came by (the admin's Try it too): it is
    counted in the inference metrics when it finishes."""
    context = current()
    if context is not None:
        context.inference = True


def bind_model(model) -> None:
    """The request is served by this model version."""
    context = current()
    if context is not None:
        context.model = model


def bind_outcome(outcome) -> None:
    """The prediction's outcome (inference.services.PredictionOutcome): cache and timings."""
    context = current()
    if context is None:
        return
    context.model = outcome.model
    if outcome.cached:
        context.cached = True
    else:
        context.cached = False if outcome.cache_key is not None else None
        context.queue_ms = outcome.timings.queue
        context.compute_ms = outcome.timings.compute


# Called with each finished predict or infer request (the context, its status, duration_ms and
# retry_after): the inference app counts them (inference.metrics, registered by its AppConfig).
_inference_hooks: list = []


def on_inference_finished(hook) -> None:
    """Have ``hook(context, status, *, duration_ms, retry_after)`` called for every finished
    inference request (the ground imports no app; the app registers itself)."""
    if hook not in _inference_hooks:
        _inference_hooks.append(hook)


def finish(status: int, *, retry_after: bool = False) -> str:
    """Record the answered request (log line, metrics) and end its context; returns its id."""
    context = current()
    if context is None:  # not begun (cannot happen on our paths): still answer with an id
        return ids.uuid4().hex
    # The id stays current until the next request of this thread: Django logs a 4xx or 5xx
    # response ("Not Found: ...") after the middleware returns, and that line is this request's.
    context.finished = True
    duration_ms = (time.perf_counter() - context.started) * 1000
    if context.inference:
        for hook in _inference_hooks:
            hook(context, status, duration_ms=duration_ms, retry_after=retry_after)
    if logger.isEnabledFor(logging.INFO):
        model = context.model
        logger.info(
            "%s %s %s %.3fms",
            context.method,
            context.path,
            status,
            duration_ms,
            extra={
                "request_id": context.id,
                "method": context.method,
                "path": context.path,
                "status": status,
                "key": context.key_name,
                "model": getattr(model, "name", None),
                "version": getattr(model, "version", None),
                "cached": context.cached,
                "duration_ms": round(duration_ms, 3),
                "queue_ms": None if context.queue_ms is None else round(context.queue_ms, 3),
                "compute_ms": None if context.compute_ms is None else round(context.compute_ms, 3),
            },
        )
    return context.id


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or ``-``) to every record; on the handler,
    so records of every logger get it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            context = _current.get()
            record.request_id = context.id if context is not None else "-"
        return True


# Credentials never reach a log line: a query parameter named like one (a key sent as ?api_key=,
# ?key=, ?token=, ...; no route reads one, but clients send them, and a refused request's line
# carries its full path) has its value replaced, and so does anything shaped like one of our keys
# (`<8-character prefix>.<32-character secret>`: the prefix stays, it names the key). This runs on
# every record, the request line of every predict included: cheap tests first ('=' present, a '.'
# with room for a key around it), the regular expressions only when they may match.
_CREDENTIAL_PARAM = re.compile(
    r"(?i)((?:^|[?&;])(?:api[_-]?key|apikey|key|token|access[_-]?token|auth|authorization|bearer|password|passwd"
    r"|secret|signature|sig|session|sessionid|csrftoken|csrfmiddlewaretoken)=)[^&;\s'\"]+"
)
_KEY_SHAPE = re.compile(r"([A-Za-z0-9]{8})\.[A-Za-z0-9]{32}")
_KEY_LENGTH = 41
REDACTED = "[redacted]"
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


def _has_key_shape(text: str) -> bool:
    dot = text.find(".", 8)
    while dot != -1 and dot + 33 <= len(text):
        if _KEY_SHAPE.match(text, dot - 8):
            return True
        dot = text.find(".", dot + 1)
    return False


def _may_hold_credential(text: str) -> bool:
    return ("=" in text and _CREDENTIAL_PARAM.search(text) is not None) or (
        len(text) >= _KEY_LENGTH and _has_key_shape(text)
    )


def redact(text: str) -> str:
    """`text` with credential values replaced by [redacted]."""
    if not _may_hold_credential(text):
        return text
    return _KEY_SHAPE.sub(rf"\1.{REDACTED}", _CREDENTIAL_PARAM.sub(rf"\1{REDACTED}", text))


class RedactCredentialsFilter(logging.Filter):
    """On the log handler: takes credentials out of the message, its arguments and every extra
    field (Django's request logger passes the request itself, whose repr is its full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(_may_hold_credential(text) for text in (record.msg, *args) if isinstance(text, str)):
            record.msg, record.args = redact(record.getMessage()), None
        fields = record.__dict__
        for name in fields.keys() - _RECORD_FIELDS:
            value = fields[name]
            if value is None or isinstance(value, (int, float, bool)):
                continue
            text = value if isinstance(value, str) else repr(value)
            if _may_hold_credential(text):
                fields[name] = redact(text)
        return True


class RequestLogMiddleware:
    """Django's side: the first middleware, so it sees every response, errors included."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        context = begin(method=request.method, path=request.path_info, incoming_id=request.headers.get(HEADER))
        try:
            response = self.get_response(request)
        except BaseException:
            finish(500)
            raise
        finish(response.status_code, retry_after=response.has_header("Retry-After"))
        response[HEADER] = context.id
        return response
