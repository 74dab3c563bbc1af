"""Two deployments sharing one Redis server (staging and production) never hear each other's
cache invalidations or job notifications: channels are scoped by CACHE_KEY_PREFIX and the Redis
database (core.pubsub.channel), on a real Redis."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings as django_settings

from core import invalidation, pubsub
from jobs import events

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL (CI sets it)"),
]


def with_prefix(settings, prefix: str) -> None:
    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = prefix
    settings.CACHES = caches


def listen(url: str, channel: str):
    subscriber = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    assert subscriber.get_message(timeout=1) is None  # the subscription is in place
    return subscriber


def received(subscriber, seconds: float = 2.0) -> list[bytes]:
    """Messages that arrive within `seconds` (stops at the first quiet half-second after one)."""
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.5)
        if message is not None:
            messages.append(message["data"])
        elif messages:
            break
    return messages


def test_each_deployment_hears_only_its_own_invalidations(settings, django_capture_on_commit_callbacks):
    url = settings.REDIS_URL
    with_prefix(settings, "production")
    production = listen(url, pubsub.channel(invalidation.CHANNEL, url))
    with_prefix(settings, "staging")
    staging = listen(url, pubsub.channel(invalidation.CHANNEL, url))

    with django_capture_on_commit_callbacks(execute=True):
        invalidation.notify("models")  # a registry write in staging

    assert received(staging) == [b"models"]
    assert received(production, seconds=1.0) == []


def test_the_same_prefix_on_another_redis_database_is_another_deployment(settings):
    url = events.redis_url()
    other = urlunsplit(urlsplit(url)._replace(path="/15"))
    assert pubsub.channel("invalidate", url) != pubsub.channel("invalidate", other)
    neighbour = listen(url, pubsub.channel(events.CHANNEL, other))
    mine = listen(url, pubsub.channel(events.CHANNEL, url))

    events.job_finished("job-1")  # a job of this deployment reached a final status
    assert received(mine) == [b"job-1"]
    assert received(neighbour, seconds=1.0) == []
