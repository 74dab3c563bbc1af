"""Refreshing in-process cache entries off the request path: stale while revalidating.

The per-process caches of the hot path (access.keys.KeyCache, inference.serving.ServingCache)
keep a row for a few seconds; changes reach them at once through core.invalidation, and their
TTL only bounds the delay if a notification were lost. A request that finds its entry past the
TTL used to load it again itself: a query on a request thread, which under load waits for the
database behind the history's writes (hundreds of milliseconds at the p99, issue 18). Now it
answers from the entry it has and hands the reload to this process's refresher thread; an entry
twice the TTL old (the refresher stuck, the database away) is not served, and is loaded on the
request's own thread as before. A TTL of 0 keeps nothing, as before.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)


class Refresher:
    """One thread per process running submitted reloads, each key at most once at a time."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Hashable, Callable[[], object]]] = queue.SimpleQueue()
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, key: Hashable, reload: Callable[[], object]) -> None:
        """Run ``reload()`` on the refresher thread soon, unless one for ``key`` waits or runs."""
        with self._lock:
            if self._pid != os.getpid():  # threads do not survive a fork (granian's workers)
                self._pid, self._pending, self._queue = os.getpid(), set(), queue.SimpleQueue()
                self._thread = None
            if key in self._pending:
                return
            self._pending.add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="cache-refresher", daemon=True
                )
                self._thread.start()
        self._queue.put((key, reload))

    def _run(self, work: queue.SimpleQueue) -> None:
        while True:
            key, reload = work.get()
            try:
                close_old_connections()
                reload()
            except Exception:  # the entry is loaded on a request's thread instead, as before
                logger.exception("refreshing a cached entry failed")
            finally:
                connection.close()  # reloads are seconds apart: no connection held between them
                with self._lock:
                    self._pending.discard(key)


refresher = Refresher()
