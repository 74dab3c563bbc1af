"""The embedded runner: background work without a broker, in threads of the server process.

With CELERY_BROKER_URL empty (the `make run` default) what Celery workers would run runs here
instead, in a small pool of threads (JOB_EMBEDDED_THREADS): jobs (jobs.services.EmbeddedJob)
and model validations (registry.services.validation_enqueue). Work is any callable; the lowest
rank runs first (jobs use their priority's rank: 0 high, 1 normal, 2 low), then the oldest.
A maintenance thread runs what the apps registered with `every` (their sweepers, which Celery
beat runs otherwise) every JOB_SWEEP_INTERVAL_SECONDS; the apps register at start-up
(AppConfig.ready), so this module knows none of them. A server process starts the runner as
it starts serving (`start_for_server`, from modelforge_site.wsgi and .asgi); a job request or
a validation starts it too, in any other process.

A thread that dies (anything escaping a run that is not an ``Exception``: a ``SystemExit`` from
a library, an error in the runner's own bookkeeping) is replaced at once by a new one in the
same slot, and the work it held is handed back: its ``lost()`` method is called, if it has one
(a job queues itself again as a new attempt). Work without one is left to its app's sweeper.

What a process holds in memory ends with it; the apps' sweepers find what an ended process
left (each app marks its rows with the runner's `name`, ``embedded@host:pid``).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

_STOP = object()


class EmbeddedRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pid: int | None = None
        self._queue: queue.PriorityQueue[tuple[int, int, object]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._workers: dict[int, threading.Thread] = {}  # index -> the thread of that slot
        self._held: dict[int, Callable[[], object]] = {}  # index -> the work that thread is running
        self._periodic: list[tuple[Callable[[], object], float]] = []  # (work, at most every n seconds)
        self._replaced = 0
        self._running = 0
        self._outstanding = 0  # queued here and not yet finished

    @property
    def name(self) -> str:
        return f"embedded@{socket.gethostname()}:{os.getpid()}"

    def every(self, work: Callable[[], object], *, seconds: float = 0) -> None:
        """Run ``work()`` on the maintenance thread, each round (JOB_SWEEP_INTERVAL_SECONDS) or at
        most every ``seconds``, while this runner runs. Called from AppConfig.ready."""
        self._periodic.append((work, seconds))

    # --- control -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads in this process, once (again after a fork: threads do not survive one)."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.PriorityQueue()
            self._running = self._outstanding = 0
            self._workers, self._held, self._replaced = {}, {}, 0
            for index in range(settings.JOB_EMBEDDED_THREADS):
                self._spawn(index)
            self._threads = []
            if settings.JOB_SWEEP_INTERVAL_SECONDS > 0:
                self._threads.append(
                    threading.Thread(target=self._maintain, name="embedded-runner-maintenance", daemon=True)
                )
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the worker threads finish their current work and end (tests; interpreter exit)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            self._pid = None  # from now on a thread that ends is not replaced
            workers = list(self._workers.values())
        for _ in workers:
            self._queue.put((-1, next(self._order), _STOP))
        for thread in workers:
            thread.join(timeout)

    def _spawn(self, index: int) -> None:
        """Start the thread of slot ``index`` (with the lock held, or before any thread runs)."""
        thread = threading.Thread(target=self._worker_main, args=(index,), name=f"embedded-runner-{index}", daemon=True)
        self._workers[index] = thread
        thread.start()

    def ensure_threads(self) -> int:
        """Start a new thread for every slot whose thread is gone (it died and its own
        replacement failed); returns how many were started."""
        if self._pid != os.getpid():
            return 0
        with self._lock:
            dead = [index for index, thread in self._workers.items() if not thread.is_alive()]
            for index in dead:
                self._spawn(index)
                self._replaced += 1
        if dead:
            logger.error("embedded runner threads found dead were started again", extra={"count": len(dead)})
        return len(dead)

    def submit(self, work: Callable[[], object], *, rank: int = 0, delay: float | None = None) -> None:
        """Run ``work()`` on these threads (after ``delay`` seconds); the lowest rank first."""
        if delay:
            timer = threading.Timer(delay, self.submit, args=(work,), kwargs={"rank": rank})
            timer.daemon = True
            timer.start()
            return
        self.start()
        self.ensure_threads()
        with self._lock:
            self._outstanding += 1
        self._queue.put((rank, next(self._order), work))

    def held(self) -> list[Callable[[], object]]:
        """The work the threads are running now."""
        with self._lock:
            return list(self._held.values())

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued or running here; False if that took too long."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def stats(self) -> dict[str, int]:
        return {
            "threads": settings.JOB_EMBEDDED_THREADS,
            "queued": max(self._outstanding - self._running, 0) if self._pid == os.getpid() else 0,
            "running": self._running,
            "replaced": self._replaced,  # threads that died and were started again
        }

    # --- threads -----------------------------------------------------------------------------
    def _worker_main(self, index: int) -> None:
        """A worker thread: `_work` until told to stop. Whatever kills it (BaseException included,
        so a stray SystemExit too) starts its replacement and hands its work back."""
        try:
            self._work(index)
        except BaseException:
            logger.exception("embedded runner thread died; starting another")
            with self._lock:
                work = self._held.pop(index, None)  # died outside a run, holding one
                if self._pid == os.getpid() and self._workers.get(index) is threading.current_thread():
                    self._spawn(index)
                    self._replaced += 1
            if work is not None:
                self._hand_back(work)

    def _hand_back(self, work: Callable[[], object]) -> None:
        """The work of a dead thread: its ``lost()`` queues it again (a job: as a new attempt, as
        after a lost Celery worker). If that fails now, its app's sweeper finds it later."""
        lost = getattr(work, "lost", None)
        if lost is None:
            return
        try:
            lost()
        except Exception:
            logger.exception("could not hand back the work of a dead runner thread", extra={"work": repr(work)})
        finally:
            connection.close()

    def _work(self, index: int) -> None:
        while True:
            _, _, work = self._queue.get()
            if work is _STOP:
                return
            with self._lock:
                self._running += 1
                self._held[index] = work  # before it starts: an app's sweeper must not take it meanwhile
            try:
                work()
            except Exception:
                logger.exception("embedded runner error", extra={"work": repr(work)})
            except BaseException:
                # This thread dies (`_worker_main` replaces it). Its work is handed back first,
                # so that it is never neither queued nor running (`wait_idle`).
                with self._lock:
                    self._held.pop(index, None)
                self._hand_back(work)
                raise
            finally:
                with self._idle:
                    self._running -= 1
                    self._outstanding -= 1
                    self._idle.notify_all()
                connection.close()  # this thread's connection; the next work opens a fresh one
            with self._lock:
                self._held.pop(index, None)

    def _maintain(self) -> None:
        last_run: dict[int, float] = {}
        while True:
            for number, (work, seconds) in enumerate([(self.ensure_threads, 0), *self._periodic]):
                if number in last_run and time.monotonic() - last_run[number] < seconds:
                    continue
                last_run[number] = time.monotonic()
                try:
                    work()
                except Exception:
                    logger.exception("embedded runner maintenance failed", extra={"work": repr(work)})
                finally:
                    connection.close()
            time.sleep(settings.JOB_SWEEP_INTERVAL_SECONDS)


runner = EmbeddedRunner()


def start_for_server() -> bool:
    """Start the runner in a server process that serves without a broker, so that its
    maintenance (drift, the threshold watch, the sweepers) runs from the start rather than from
    the first job or validation. Called by the WSGI and ASGI application modules, which only
    server processes import (not manage.py commands, nor the tests' clients). Returns whether it
    started it."""
    from core.celery_app import broker_configured

    if broker_configured():
        return False
    runner.start()
    return True
