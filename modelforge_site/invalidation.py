"""Tell every server process that registry or key state changed, so in-process caches drop it.

Processes keep hot rows (API keys, servable models) in memory for speed. A write calls
`notify(topic)` once its transaction commits: local caches are cleared at once and, with
Redis configured, the topic is published so every other process (other workers, other nodes)
clears its copy within milliseconds. Caches also expire on their own after a short TTL, so a
lost message only delays a change, never hides it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "modelforge:invalidate"

_callbacks: dict[str, list[Callable[[], None]]] = defaultdict(list)
_listener: threading.Thread | None = None
_listener_lock = threading.Lock()


def on_change(topic: str, callback: Callable[[], None]) -> None:
    """Register a local cache-clearing callback for a topic ("models", "keys")."""
    _callbacks[topic].append(callback)
    _ensure_listener()


def _run_local(topic: str) -> None:
    for callback in _callbacks.get(topic, ()):
        try:
            callback()
        except Exception:
            logger.exception("invalidation callback failed", extra={"topic": topic})


def notify(topic: str) -> None:
    """Drop cached state of `topic` here now, and everywhere once the transaction commits.

    Clearing before the commit is harmless (a reader may re-cache the old row), so it is done
    again after the commit, when other processes are told too.
    """
    _run_local(topic)

    def publish() -> None:
        _run_local(topic)
        if settings.REDIS_URL:
            try:
                _redis().publish(CHANNEL, topic)
            except Exception as exc:  # other processes fall back on their TTL
                logger.warning("could not publish invalidation", extra={"error": exc.__class__.__name__})

    transaction.on_commit(publish)


def _redis(*, socket_timeout: float | None = 1):
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=socket_timeout, health_check_interval=30
    )


def _ensure_listener() -> None:
    """One subscriber thread per process (started lazily, so after a pre-fork server forks)."""
    global _listener
    if _listener is not None or not settings.REDIS_URL:
        return
    with _listener_lock:
        if _listener is None:
            _listener = threading.Thread(target=_listen, name="invalidation-listener", daemon=True)
            _listener.start()


def _listen() -> None:
    while True:
        try:
            pubsub = _redis(socket_timeout=None).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            # Messages may have been missed while (re)connecting: start from a clean slate.
            for topic in list(_callbacks):
                _run_local(topic)
            for message in pubsub.listen():
                topic = message.get("data")
                if isinstance(topic, bytes):
                    _run_local(topic.decode())
        except Exception as exc:
            logger.warning("invalidation listener reconnecting", extra={"error": exc.__class__.__name__})
            time.sleep(1)
