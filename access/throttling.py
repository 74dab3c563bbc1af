"""Request budgets per API key and scope (predict, upload, jobs), shared by every process.

Rates come from THROTTLE_RATES (``THROTTLE_RATE_PREDICT=6000/min`` and friends; DRF's rate
syntax ``<count>/<s|sec|m|min|h|hour|d|day>``; an empty rate turns that scope off). A key
that spends its budget gets 429 ``throttled`` with ``Retry-After``.

The count lives in Django's cache, which is Redis in production (REDIS_URL), so all server
processes and machines share one budget per key. DRF's `SimpleRateThrottle` keeps a list of
timestamps with a cache read and a cache write per request: two round-trips, and two processes
reading the same list both admit the request. Here a window starts with a key's first request
and one atomic Redis transaction (one round-trip) does the whole check:

    MULTI; SET k 0 EX <period> NX; INCR k; PTTL k; EXEC

so concurrent requests cannot both take the last slot, the key expires with its window, and
``Retry-After`` is the window's remaining time. A fixed window lets a key send up to twice its
rate across a window boundary; per-key windows (not aligned to the clock) spread resets out.

The same `check` serves the DRF views (`KeyRateThrottle`), the WSGI fast path and /v2 infer,
so a key has one budget whichever way its requests come. Without Redis (development) the
local-memory cache counts per process. If Redis fails, requests are let through (and that is
logged) for FAILURE_BACKOFF_SECONDS instead of waiting for it on every request: throttling
protects capacity, it must not take the API down with the cache.
"""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework import status, throttling

from access.models import APIKey
from access.principals import Principal
from core.exceptions import DomainError

logger = logging.getLogger(__name__)

FAILURE_BACKOFF_SECONDS = 5.0
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Throttled(DomainError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "throttled"

    def __init__(self, detail: str, *, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


@lru_cache(maxsize=64)
def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"6000/min"`` -> (6000, 60); None or "" -> None (no limit)."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    seconds = _PERIODS.get(period.strip()[:1].lower())
    if not count.strip().isdigit() or seconds is None:
        raise ValueError(f"Bad throttle rate {rate!r}: use <count>/<s|min|hour|day>, e.g. 6000/min.")
    return int(count), seconds


class _Breaker:
    open_until = 0.0


def _count(key: str, period: int) -> tuple[int, float]:
    """(requests in the current window including this one, seconds until the window ends)."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        full_key = cache.make_key(key)
        client = cache._cache.get_client(full_key, write=True)
        with client.pipeline(transaction=True) as pipe:
            pipe.set(full_key, 0, ex=period, nx=True)
            pipe.incr(full_key)
            pipe.pttl(full_key)
            _, count, ttl_ms = pipe.execute()
        return int(count), max(ttl_ms, 0) / 1000
    # Any other cache (local memory in development): windows aligned to the clock.
    window = int(time.time() // period)
    windowed = f"{key}:{window}"
    cache.add(windowed, 0, period + 1)
    return cache.incr(windowed), (window + 1) * period - time.time()


def check(scope: str, ident: object) -> None:
    """Count one request of ``ident`` (a key's prefix) in ``scope``; raise `Throttled` past the rate."""
    limit = parse_rate(settings.THROTTLE_RATES.get(scope))
    if limit is None:
        return
    allowed, period = limit
    now = time.monotonic()
    if now < _Breaker.open_until:
        return
    try:
        count, remaining = _count(f"throttle:{scope}:{ident}", period)
    except Exception:
        _Breaker.open_until = now + FAILURE_BACKOFF_SECONDS
        logger.warning("throttle counter unavailable; requests are not throttled", exc_info=True)
        return
    if count > allowed:
        retry_after = max(1, math.ceil(remaining))
        raise Throttled(
            f"This API key sent more than {allowed} {scope} requests in {period} s. Retry in {retry_after} s.",
            retry_after=retry_after,
        )


class KeyRateThrottle(throttling.BaseThrottle):
    """DRF throttle for views naming a scope per action or method in ``throttle_scopes``.

    Identifies the caller by API key, a signed-in staff user by id, anyone else by address
    (`X-Forwarded-For` only with REST_FRAMEWORK NUM_PROXIES set, as DRF does).
    """

    def allow_request(self, request, view) -> bool:
        scopes = getattr(view, "throttle_scopes", {}) or {}
        scope = scopes.get(getattr(view, "action", None)) or scopes.get(request.method)
        if scope is None:
            return True
        if isinstance(request.auth, APIKey):
            ident = Principal(key=request.auth).ident
        elif getattr(request.user, "is_authenticated", False):
            ident = Principal(user=request.user).ident
        else:
            ident = f"addr:{self.get_ident(request)}"
        check(scope, ident)  # raises Throttled, rendered by the API's error handler
        return True
