"""The in-process caches on the predict path, hand-written vs cachetools, side by side.

For each cache: get-hit, get-miss and put, in ns per operation, for the hand-written class and
for the cachetools shape that would replace it (BodyMemo is on cachetools.LRUCache now; its
hand-written OrderedDict version is kept below as the reference) (cachetools is not thread-safe, so each candidate
holds a lock around every call, as it would under granian's threads). Rounds are interleaved
(A, B, B, A, ...), each figure is the median over the rounds, and the ratio is B / A (above
1: cachetools is slower). The fast path's whole budget is ~110 us per request, which makes a
key lookup, a model lookup and a body-memo lookup: a few hundred ns each matter.

    .venv/bin/python bench/ttl_caches.py [--rounds 7] [--ops 200000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")

import django  # noqa: E402

django.setup()

import cachetools  # noqa: E402
from django.conf import settings  # noqa: E402

from access.keys import MAX_CACHED_KEYS, KeyCache  # noqa: E402
from inference.cache import BodyMemo, LocalLRU  # noqa: E402
from inference.serving import MAX_ENTRIES, ServingCache  # noqa: E402

WORKING_SET = 1_000  # distinct keys looked up (a busy deployment's keys / models / bodies)


class TTLKeys:
    """KeyCache on cachetools.TTLCache."""

    def __init__(self) -> None:
        self._entries = cachetools.TTLCache(maxsize=MAX_CACHED_KEYS, ttl=settings.API_KEY_CACHE_SECONDS)
        self._lock = threading.Lock()

    def get(self, digest):
        with self._lock:
            return self._entries.get(digest)

    def put(self, digest, value) -> None:
        with self._lock:
            self._entries[digest] = value


class TTLServing:
    """ServingCache on cachetools.TTLCache, with the same generation guard."""

    def __init__(self) -> None:
        self._entries = cachetools.TTLCache(maxsize=MAX_ENTRIES, ttl=settings.SERVING_CACHE_SECONDS)
        self._lock = threading.Lock()
        self._generation = 0

    def _get(self, key, load):
        with self._lock:
            model = self._entries.get(key)
        if model is not None:
            return model
        generation = self._generation
        model = load()
        with self._lock:
            if generation == self._generation:
                self._entries[key] = model
        return model


class TLRULocal:
    """LocalLRU on cachetools.TLRUCache: per-entry expiry, bounded by bytes, LRU."""

    def __init__(self) -> None:
        self._entries = cachetools.TLRUCache(
            maxsize=settings.PREDICTION_CACHE_LOCAL_MB * 1024 * 1024,
            ttu=lambda _key, value, _now: value[1],
            getsizeof=lambda value: len(value[0]),
        )
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key, raw, ttl) -> None:
        if len(raw) > self._entries.maxsize // 10:
            return
        with self._lock:
            self._entries[key] = (raw, time.monotonic() + ttl)


class OrderedDictMemo(BodyMemo):
    """The hand-written BodyMemo that cachetools.LRUCache replaced (kept here as the reference)."""

    def __init__(self) -> None:
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model, body, *, tenant):
        if len(body) > self.MAX_BODY_BYTES:
            return None
        with self._lock:
            return self._entries.get(self._key(model, body, tenant))

    def put(self, model, body, cache_key, input_data, *, tenant) -> None:
        if len(body) > self.MAX_BODY_BYTES:
            return
        with self._lock:
            self._entries[self._key(model, body, tenant)] = (cache_key, input_data)
            if len(self._entries) > self.MAX_ENTRIES:
                self._entries.popitem(last=False)


class FakeModel:
    file_sha256 = "ab" * 32
    allow_non_finite = False


def per_op(loop, ops: int) -> float:
    start = time.perf_counter_ns()
    loop(ops)
    return (time.perf_counter_ns() - start) / ops


def key_ops(cls):
    hits = [f"{i:064x}" for i in range(WORKING_SET)]
    misses = [f"{i + 10**9:064x}" for i in range(WORKING_SET)]
    cache = cls()
    for digest in hits:
        cache.put(digest, object())

    def get_hit(ops):
        get = cache.get
        for i in range(ops):
            get(hits[i % WORKING_SET])

    def get_miss(ops):
        get = cache.get
        for i in range(ops):
            get(misses[i % WORKING_SET])

    def put(ops):
        put, value = cache.put, object()
        for i in range(ops):
            put(hits[i % WORKING_SET], value)

    return {"get-hit": get_hit, "get-miss": get_miss, "put": put}


def serving_ops(cls):
    hits = [("name", f"model-{i}", None, None) for i in range(WORKING_SET)]
    cache = cls()
    row = object()
    for key in hits:
        cache._get(key, lambda: row)

    def get_hit(ops):
        get, load = cache._get, lambda: row
        for i in range(ops):
            get(hits[i % WORKING_SET], load)

    def miss_and_put(ops):
        # A miss loads and stores: clear first so every call misses (as after an invalidation).
        get, load = cache._get, lambda: row
        for i in range(ops):
            if i % WORKING_SET == 0:
                cache._entries.clear()
            get(hits[i % WORKING_SET], load)

    return {"get-hit": get_hit, "miss+put": miss_and_put}


def local_ops(cls):
    hits = [f"pred:key:abc:{'ab' * 32}:{i:040x}" for i in range(WORKING_SET)]
    misses = [f"pred:key:abc:{'cd' * 32}:{i:040x}" for i in range(WORKING_SET)]
    raw = b'{"outputs":{"label":[0],"probabilities":[[0.9,0.05,0.05]]}}'
    cache = cls()
    for key in hits:
        cache.put(key, raw, 3600.0)

    def get_hit(ops):
        get = cache.get
        for i in range(ops):
            get(hits[i % WORKING_SET])

    def get_miss(ops):
        get = cache.get
        for i in range(ops):
            get(misses[i % WORKING_SET])

    def put(ops):
        put = cache.put
        for i in range(ops):
            put(hits[i % WORKING_SET], raw, 3600.0)

    return {"get-hit": get_hit, "get-miss": get_miss, "put": put}


def memo_ops(cls):
    bodies = [b'{"inputs": {"input": [[5.1, 3.5, 1.4, %d]]}}' % i for i in range(WORKING_SET)]
    misses = [b'{"inputs": {"input": [[6.1, 3.5, 1.4, %d]]}}' % i for i in range(WORKING_SET)]
    model, memo = FakeModel(), cls()
    for body in bodies:
        memo.put(model, body, "pred:key", [[5.1]], tenant="key:abc")

    def get_hit(ops):
        get = memo.get
        for i in range(ops):
            get(model, bodies[i % WORKING_SET], tenant="key:abc")

    def get_miss(ops):
        get = memo.get
        for i in range(ops):
            get(model, misses[i % WORKING_SET], tenant="key:abc")

    def put(ops):
        put = memo.put
        for i in range(ops):
            put(model, bodies[i % WORKING_SET], "pred:key", [[5.1]], tenant="key:abc")

    return {"get-hit": get_hit, "get-miss": get_miss, "put": put}


PAIRS = {
    "access.keys KeyCache": (key_ops, KeyCache, TTLKeys, "TTLCache"),
    "inference.serving ServingCache": (serving_ops, ServingCache, TTLServing, "TTLCache"),
    "inference.cache LocalLRU": (local_ops, LocalLRU, TLRULocal, "TLRUCache"),
    "inference.cache BodyMemo": (memo_ops, OrderedDictMemo, BodyMemo, "LRUCache"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=200_000)
    args = parser.parse_args()
    print(f"cachetools {cachetools.__version__}, {args.rounds} interleaved rounds of {args.ops} ops, medians")
    print(f"{'cache':34} {'op':9} {'hand ns':>8} {'ct ns':>8} {'ratio':>6}  spread hand / ct")
    for name, (make_ops, hand, candidate, ct_name) in PAIRS.items():
        hand_ops, ct_ops = make_ops(hand), make_ops(candidate)
        samples = {op: ([], []) for op in hand_ops}
        for round_ in range(args.rounds):
            order = ((0, hand_ops), (1, ct_ops)) if round_ % 2 == 0 else ((1, ct_ops), (0, hand_ops))
            for op in hand_ops:
                for side, ops in order:
                    samples[op][side].append(per_op(ops[op], args.ops))
        for op, (a, b) in samples.items():
            ma, mb = statistics.median(a), statistics.median(b)
            spread = f"{min(a):.0f}-{max(a):.0f} / {min(b):.0f}-{max(b):.0f}"
            print(f"{name:34} {op:9} {ma:8.0f} {mb:8.0f} {mb / ma:6.2f}  {spread}  ({ct_name})")


if __name__ == "__main__":
    main()
