"""A deadline for every ONNX Runtime run: past INFERENCE_TIMEOUT_SECONDS it is stopped.

`InferenceSession.run` holds its thread inside ONNX Runtime until the graph is done; Python
cannot interrupt it. ONNX Runtime's own way out is the `terminate` flag of the run's
`RunOptions`, set from another thread: the executor checks it between kernels (and a Loop
between iterations) and fails the run with "Exiting due to terminate flag being set to true".
So each run gets its own RunOptions, registered with one watcher thread per process; the
watcher sets `terminate` on any run past its deadline, and `run` turns the resulting error into
`InferenceTimeout` (504 ``inference_timeout``). The thread is then free again: the server, or
the Celery worker, goes on serving.

The watcher polls the runs in flight every `TICK_SECONDS` while there are any and sleeps on an
event when there are none, so registering a run costs a dict insert (and an event set only
when the watcher was idle): microseconds next to the run itself. A single kernel is not
interrupted, so a deadline can be overrun by the longest kernel of the graph.

A caller with a deadline of its own (a gRPC call's, inference.grpc) runs under
`caller_deadline`: a run it starts in that context stops at whichever comes first. Runs that a
model's batcher executes in its own thread keep the configured timeout.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import onnxruntime as ort
from django.conf import settings
from rest_framework import status

from core.exceptions import DomainError

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.02


class InferenceTimeout(DomainError):
    """The model ran past the inference timeout and was stopped (504)."""

    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    code = "inference_timeout"


class _Run:
    __slots__ = ("deadline", "options", "expired")

    def __init__(self, deadline: float, options: ort.RunOptions):
        self.deadline = deadline
        self.options = options
        self.expired = False


class DeadlineWatcher:
    def __init__(self) -> None:
        self._runs: dict[int, _Run] = {}
        self._ids = itertools.count()
        self._wake = threading.Event()
        self._idle = True  # the watcher sleeps on _wake until a run is registered
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(
        self,
        session: ort.InferenceSession,
        feeds: dict[str, Any],
        *,
        timeout: float,
        label: str = "",
        limit: str = "INFERENCE_TIMEOUT_SECONDS",
    ) -> list:
        """``session.run(None, feeds)``, stopped after ``timeout`` seconds (0: no deadline);
        ``limit`` names where the timeout comes from, for the error message.

        Raises `InferenceTimeout` when stopped; other ONNX Runtime errors pass through as they are.
        """
        if timeout <= 0:
            return session.run(None, feeds)
        options = ort.RunOptions()
        options.log_severity_level = 4  # the terminated run is ours to report, not ONNX Runtime's
        entry = _Run(time.monotonic() + timeout, options)
        run_id = next(self._ids)
        self._runs[run_id] = entry
        if self._idle:
            self._wake.set()
        self._ensure_thread()
        try:
            return session.run(None, feeds, options)
        except Exception:
            if entry.expired:
                logger.warning("inference stopped at its deadline", extra={"model": label, "timeout": timeout})
                raise InferenceTimeout(
                    f"The model ran longer than {_LIMITS.get(limit, 'the inference timeout')} ({timeout:g} s, {limit}) "
                    "and was stopped. Send fewer rows per request, or use a batch job."
                ) from None
            raise
        finally:
            self._runs.pop(run_id, None)

    def in_flight(self) -> int:
        return len(self._runs)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="inference-deadlines", daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        while True:
            # Idle and cleared before looking: a run registered after the look sees _idle and
            # sets the event, so the wait below returns at once.
            self._idle = True
            self._wake.clear()
            if not self._runs:
                self._wake.wait()
                continue
            self._idle = False
            now = time.monotonic()
            for entry in list(self._runs.values()):
                if not entry.expired and entry.deadline <= now:
                    entry.expired = True
                    entry.options.terminate = True
            time.sleep(TICK_SECONDS)


watcher = DeadlineWatcher()

CALLER_DEADLINE = "the caller's deadline"
_LIMITS = {"INFERENCE_TIMEOUT_SECONDS": "the inference timeout", CALLER_DEADLINE: "the time the call had left"}
_caller_deadline: ContextVar[float | None] = ContextVar("modelforge_caller_deadline", default=None)


@contextmanager
def caller_deadline(seconds: float | None) -> Iterator[None]:
    """Runs started in this context (thread) also stop once ``seconds`` from now have passed:
    the caller gave up by then (None: no deadline of its own)."""
    token = _caller_deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _caller_deadline.reset(token)


def current_timeout() -> tuple[float, str]:
    """(seconds, its source) a run started now may take: INFERENCE_TIMEOUT_SECONDS (0: none), or
    what is left of the caller's deadline when that is shorter."""
    configured = settings.INFERENCE_TIMEOUT_SECONDS
    deadline = _caller_deadline.get()
    if deadline is None:
        return configured, "INFERENCE_TIMEOUT_SECONDS"
    left = max(deadline - time.monotonic(), 0.001)  # already past: stopped at once
    if 0 < configured <= left:
        return configured, "INFERENCE_TIMEOUT_SECONDS"
    return left, CALLER_DEADLINE


def run(session: ort.InferenceSession, feeds: dict[str, Any], *, label: str = "") -> list:
    """Run a session under the configured deadline (or the caller's, when shorter)."""
    timeout, limit = current_timeout()
    return watcher.run(session, feeds, timeout=timeout, label=label, limit=limit)
