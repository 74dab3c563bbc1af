"""Knowing, inside a server process, that it has been asked to stop (SIGTERM).

Readiness (`/api/v1/ready`, `/v2/health/ready`) answers 503 from the moment a process receives
SIGTERM, so a load balancer stops sending it new requests while the requests it has admitted
finish. The server itself does the draining; this module only learns that it has begun.

How each server delivers SIGTERM to the process that runs the application:

- granian (production): every worker process loads the application (this project's wsgi
  module) and only then installs its own SIGTERM handler (`granian._signals.set_sync_signals`,
  called from the worker's main thread), which replaces any handler installed at import. So
  `install` wraps that function, before granian calls it, to chain our handler in front of
  granian's: on SIGTERM the flag is set, then granian's handler starts its graceful stop
  (no new connections; requests in progress run to the end; then the process exits, running
  multiprocessing's finalizers, which write the buffered history: inference.history).
- gunicorn and runserver install their handlers before importing the application: `install`
  chains ours in front of the handler in place (or of the default action, which it then runs).
- `manage.py serve_grpc` (inference.grpc.server): each worker installs its own stop handler
  (graceful: no new calls, those in flight finish), then `install` chains ours in front of it.

Both paths need the main thread, where Python runs signal handlers; `install` is called from
the wsgi module, which every server imports in its main thread.

granian closes its listener and idle keep-alive connections as soon as its handler runs, so a
load balancer that has not yet noticed would have new connections refused. With
SHUTDOWN_DRAIN_SECONDS set, our handler waits that long before passing SIGTERM on: the process
keeps serving, readiness answering 503, so the balancer stops routing to it first (what a
Kubernetes preStop sleep does). A second SIGTERM during the drain changes nothing; SIGINT
still stops at once (granian's own handler).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

logger = logging.getLogger(__name__)

stopping = threading.Event()


def begin(reason: str = "SIGTERM") -> None:
    """Mark this process as stopping: readiness answers 503 from now on."""
    if not stopping.is_set():
        stopping.set()
        logger.info("shutdown started; readiness now answers 503", extra={"reason": reason, "pid": os.getpid()})


def _drain_seconds() -> float:
    from django.conf import settings

    return float(getattr(settings, "SHUTDOWN_DRAIN_SECONDS", 0) or 0)


_claim = threading.Lock()
_previous: list = [signal.SIG_DFL]  # the SIGTERM handler ours runs in front of
_wakeup: list = []  # the socket pair signal.set_wakeup_fd writes to, once set up


def _on_sigterm(signum: int, frame, *, in_main_thread: bool) -> None:
    """Begin the shutdown once, then pass SIGTERM on (after the drain, if one is set)."""
    previous = _previous[0]
    if not in_main_thread and not callable(previous):
        return  # restoring the default action needs the main thread: its handler does it
    # Taken once and never released: the first caller handles the signal, any other returns.
    # Not a blocking `with`: a second SIGTERM can run this handler again, in the main thread,
    # in the middle of the first one (a process group kill sends SIGTERM twice).
    if not _claim.acquire(blocking=False):
        return
    begin()
    if callable(previous):

        def forward():
            previous(signum, frame)

    elif previous == signal.SIG_DFL:
        # The default action: end the process, as if we had never been here.
        signal.signal(signum, signal.SIG_DFL)

        def forward():
            os.kill(os.getpid(), signum)

    else:
        return
    delay = _drain_seconds()
    if delay > 0:
        # Keep serving (readiness already 503) so the load balancer stops routing here
        # before the server closes its listener.
        logger.info("draining before the server stops", extra={"seconds": delay})
        timer = threading.Timer(delay, forward)
        timer.daemon = True
        timer.start()
    else:
        forward()


def _watch_wakeups() -> None:
    """Also learn of SIGTERM without the main thread.

    Python runs signal handlers only when the main thread runs Python code. A granian worker's
    main thread waits inside granian until shutdown, and a signal caught while it waits is
    handled only when it next wakes up, which may be much later or never (observed: a worker
    that never stopped). CPython's C-level handler writes every caught signal's number to the
    wakeup fd at once, from whichever thread the kernel chose: a thread reading it runs our
    handler, and the one in front of which ours was chained (granian's sets its stop event,
    which any thread may do). Skipped when something else already uses the wakeup fd.
    """
    if _wakeup:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    old = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    if old != -1:
        signal.set_wakeup_fd(old)
        reader.close()
        writer.close()
        return
    _wakeup.extend((reader, writer))

    def read() -> None:
        while True:
            caught = reader.recv(64)
            if signal.SIGTERM in caught:
                _on_sigterm(signal.SIGTERM, None, in_main_thread=False)

    threading.Thread(target=read, name="sigterm-watch", daemon=True).start()


def _chain_sigterm() -> None:
    """Put our handler in front of whatever handles SIGTERM now (main thread only)."""
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "_modelforge", False):
        return
    _previous[0] = previous

    def handler(signum, frame):
        _on_sigterm(signum, frame, in_main_thread=True)

    handler._modelforge = True
    signal.signal(signal.SIGTERM, handler)
    _watch_wakeups()


def _wrap_granian() -> None:
    """Chain our handler after granian's worker installs its own (see the module docstring)."""
    granian_signals = sys.modules.get("granian._signals")
    original = getattr(granian_signals, "set_sync_signals", None)
    if original is None or getattr(original, "_modelforge", False):
        return

    def set_sync_signals(*args, **kwargs):
        event = original(*args, **kwargs)
        _chain_sigterm()
        # The worker starts serving right after: from here on a SIGTERM stops it gracefully.
        logger.info("granian worker ready for SIGTERM", extra={"pid": os.getpid()})
        return event

    set_sync_signals._modelforge = True
    granian_signals.set_sync_signals = set_sync_signals


def install() -> None:
    """Learn of SIGTERM in this process, whichever server runs it. Safe to call twice."""
    if threading.current_thread() is not threading.main_thread():
        logger.debug("shutdown hook not installed: not in the main thread (runserver with autoreload)")
        return
    _chain_sigterm()
    _wrap_granian()
