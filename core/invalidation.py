"""Tell every server process that registry or key state changed, so in-process caches drop it.

Processes keep hot rows (API keys, servable models) in memory for speed. A write calls
`notify(topic)` once its transaction commits: local caches are cleared at once and, with
Redis configured, the topic is published so every other process (other workers, other nodes)
clears its copy within milliseconds. Caches also expire on their own after a short TTL, so a
lost message only delays a change, never hides it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from core import pubsub

logger = logging.getLogger(__name__)

CHANNEL = "invalidate"  # scoped to the deployment by pubsub.channel

_callbacks: dict[str, list[Callable[[], None]]] = defaultdict(list)


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
    again after the commit, when other processes are told too (they fall back on their TTL if
    Redis cannot be reached).
    """
    _run_local(topic)

    def publish() -> None:
        _run_local(topic)
        if settings.REDIS_URL:
            pubsub.publish(settings.REDIS_URL, pubsub.channel(CHANNEL, settings.REDIS_URL), topic)

    transaction.on_commit(publish)


def _run_all() -> None:
    """After a (re)connect, messages may have been missed: drop every cached state."""
    for topic in list(_callbacks):
        _run_local(topic)


def _ensure_listener() -> None:
    """One subscriber thread per process (started lazily, so after a pre-fork server forks)."""
    if settings.REDIS_URL:
        pubsub.subscribe(
            settings.REDIS_URL,
            pubsub.channel(CHANNEL, settings.REDIS_URL),
            on_message=_run_local,
            on_reconnect=_run_all,
        )
