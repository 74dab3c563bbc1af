"""Wake the requests waiting on a job (``GET /api/v1/jobs/{id}/result?wait=N``) when it ends.

Within a process (the embedded runner) a finished job sets the waiters' events directly.
Across processes (Celery workers, other server processes) the finishing process publishes the
job id on a Redis channel and one listener thread per server process sets the events. Both
are only a shortcut: waiters re-read the job from the database on their own too, with growing
pauses, so a lost message delays an answer by a second or two, never loses it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "modelforge:jobs:finished"

_waiters: dict[str, set[threading.Event]] = defaultdict(set)
_lock = threading.Lock()
_listener: threading.Thread | None = None


def redis_url() -> str:
    """The Redis that carries the notifications: the cache's, else the broker's."""
    if settings.REDIS_URL:
        return settings.REDIS_URL
    broker = settings.CELERY_BROKER_URL
    return broker if broker.startswith(("redis://", "rediss://")) else ""


def job_finished(job_id) -> None:
    """Tell every waiter, here and in other processes, that the job reached a final status."""
    key = str(job_id)
    _wake(key)
    url = redis_url()
    if url:
        try:
            _publisher(url).publish(CHANNEL, key)
        except Exception as exc:  # the waiters' own polling still finds out
            logger.warning("could not publish a job notification", extra={"error": exc.__class__.__name__})


@contextlib.contextmanager
def waiting_for(job_id) -> Iterator[threading.Event]:
    """An event set when the job finishes; register before reading the job's status, so a
    finish between the read and the wait is not missed."""
    key = str(job_id)
    event = threading.Event()
    with _lock:
        _waiters[key].add(event)
    _ensure_listener()
    try:
        yield event
    finally:
        with _lock:
            events = _waiters.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del _waiters[key]


def _wake(key: str) -> None:
    with _lock:
        events = list(_waiters.get(key, ()))
    for event in events:
        event.set()


@functools.cache
def _publisher(url: str):
    """One client (and connection pool) per process and URL; redis-py re-creates its
    connections after a fork."""
    return _client(url, socket_timeout=1)


def _client(url: str, *, socket_timeout: float | None):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=socket_timeout)


def _ensure_listener() -> None:
    global _listener
    if _listener is not None and _listener.is_alive():
        return
    url = redis_url()
    if not url:
        return
    with _lock:
        if _listener is None or not _listener.is_alive():
            _listener = threading.Thread(target=_listen, args=(url,), name="job-events", daemon=True)
            _listener.start()


def _listen(url: str) -> None:
    while True:
        try:
            pubsub = _client(url, socket_timeout=None).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            # Anything published while (re)connecting was missed: let every waiter look again.
            with _lock:
                keys = list(_waiters)
            for key in keys:
                _wake(key)
            for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes):
                    _wake(data.decode())
        except Exception as exc:
            logger.warning("job notification listener reconnecting", extra={"error": exc.__class__.__name__})
            time.sleep(1)
