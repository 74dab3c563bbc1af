"""Wake the requests waiting on a job (``GET /api/v1/jobs/{id}/result?wait=N``) when it ends.

Within a process (the embedded runner) a finished job sets the waiters' events directly.
Across processes (Celery workers, other server processes) the finishing process publishes the
job id on a Redis channel and one listener thread per server process sets the events. Both
are only a shortcut: waiters re-read the job from the database on their own too, with growing
pauses, so a lost message delays an answer by a second or two, never loses it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings

from core import pubsub

logger = logging.getLogger(__name__)

CHANNEL = "jobs:finished"  # scoped to the deployment by pubsub.channel

_waiters: dict[str, set[threading.Event]] = defaultdict(set)
_lock = threading.Lock()


def redis_url() -> str:
    """The Redis that carries the notifications: the cache's, else the broker's."""
    if settings.REDIS_URL:
        return settings.REDIS_URL
    broker = settings.CELERY_BROKER_URL
    return broker if broker.startswith(("redis://", "rediss://")) else ""


def job_finished(job_id) -> None:
    """Tell every waiter, here and in other processes, that the job reached a final status.

    If Redis cannot be reached, the waiters' own polling still finds out."""
    key = str(job_id)
    _wake(key)
    url = redis_url()
    if url:
        pubsub.publish(url, pubsub.channel(CHANNEL, url), key)


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


def _wake_all() -> None:
    """Anything published while (re)connecting was missed: let every waiter look again."""
    with _lock:
        keys = list(_waiters)
    for key in keys:
        _wake(key)


def _ensure_listener() -> None:
    url = redis_url()
    if url:
        pubsub.subscribe(url, pubsub.channel(CHANNEL, url), on_message=_wake, on_reconnect=_wake_all)
