"""Redis publish/subscribe between server and worker processes.

One cached publishing client per process and URL, and one listener thread per channel that
reconnects on its own. Subscribers pass a callback for each message and one for reconnects:
messages published while a listener was (re)connecting are lost, so a subscriber must then
assume anything may have happened.

Channels are server-wide in Redis (not per database, not prefixed like keys), so every channel
name goes through `channel(name)`, which scopes it by the deployment: the cache's key prefix
(CACHE_KEY_PREFIX) and the Redis database number. Two deployments sharing a Redis server (staging
and production) then never hear each other.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlparse

from django.conf import settings

logger = logging.getLogger(__name__)

_listeners: dict[tuple[str, str], threading.Thread] = {}
_lock = threading.Lock()


def channel(name: str, url: str) -> str:
    """``name`` scoped to this deployment: "<CACHE_KEY_PREFIX>:db<N>:<name>" for Redis at ``url``."""
    prefix = settings.CACHES["default"].get("KEY_PREFIX") or "modelforge"
    database = urlparse(url).path.strip("/") or "0"
    return f"{prefix}:db{database}:{name}"


def _client(url: str, *, socket_timeout: float | None):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=socket_timeout, health_check_interval=30)


@functools.cache
def _publisher(url: str):
    """One client (and connection pool) per process and URL; redis-py re-creates its
    connections after a fork."""
    return _client(url, socket_timeout=1)


def publish(url: str, channel: str, message: str) -> bool:
    """Publish; False (and a warning) when Redis cannot be reached: callers have a fallback."""
    try:
        _publisher(url).publish(channel, message)
        return True
    except Exception as exc:
        logger.warning("could not publish", extra={"channel": channel, "error": exc.__class__.__name__})
        return False


def subscribe(url: str, channel: str, *, on_message: Callable[[str], None], on_reconnect: Callable[[], None]) -> None:
    """Start (once per process, URL and channel) a daemon thread delivering the channel's messages."""
    key = (url, channel)
    thread = _listeners.get(key)
    if thread is not None and thread.is_alive():
        return
    with _lock:
        thread = _listeners.get(key)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(
                target=_listen, args=(url, channel, on_message, on_reconnect), name=f"pubsub-{channel}", daemon=True
            )
            _listeners[key] = thread
            thread.start()


def _listen(url: str, channel: str, on_message, on_reconnect) -> None:
    while True:
        try:
            pubsub = _client(url, socket_timeout=None).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
            on_reconnect()
            for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes):
                    on_message(data.decode())
        except Exception as exc:
            logger.warning("pubsub listener reconnecting", extra={"channel": channel, "error": exc.__class__.__name__})
            time.sleep(1)
