"""A background thread of a process, started when first needed and again whenever it is gone.

The writers and sweepers of the serving path (the history, the serving and shadow statistics,
the metrics' flush, the session sweeper) each run one loop on a daemon thread. Threads do not
survive a fork (granian's and Celery's workers are forks), and a loop can end on something its
own handler does not catch; so each asks `ensure()` when it has work: a read of whether the
thread runs, no lock on the request path, and a start under a lock when it does not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Restartable:
    __slots__ = ("_lock", "_name", "_target", "_thread")

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self._target = target
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Start the thread unless it runs."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
                self._thread.start()
