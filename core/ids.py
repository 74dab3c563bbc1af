"""Ids for requests (random, UUID version 4) and predictions (time-ordered, UUID version 7),
without a system call per id.

`uuid.uuid4` asks the kernel for 16 bytes (getrandom) on every call; the predict path makes two
ids per request, and under load those system calls cost more than the rest of the id work. Here
each thread reads 4 KiB from the same source (`os.urandom`) at a time and cuts 256 ids from it:
the ids are exactly as random as uuid4's. The buffers are dropped in a forked child (granian and
Celery fork their workers), so two processes never hand out the same bytes.

Prediction ids are version 7 (RFC 9562): the first 48 bits are the Unix time in milliseconds, so
new rows land at the right edge of the history's primary-key index instead of on a random page
of it (a random page is read, dirtied and, the first time after each checkpoint, written whole
to the WAL). The 12 bits after the version hold the fraction of the millisecond (RFC 9562,
section 6.2, method 3) and the last 62 bits are random, from the same buffer as uuid4's. Within
a thread the ids increase: one that would not (the same clock tick, or the clock stepped back) is
made from the previous one's time plus one tick. They are UUIDs like any other to a client.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_CHUNK = 4096  # bytes read from the kernel at a time: 256 ids


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.offset = 0
        self.last_tick = 0  # the time part (ms << 12 | fraction) of this thread's last uuid7


_buffer = _Buffer()


def _forget_buffers() -> None:
    global _buffer
    _buffer = _Buffer()


os.register_at_fork(after_in_child=_forget_buffers)


def random_bytes16() -> bytes:
    """16 bytes from os.urandom, read in chunks."""
    buffer = _buffer
    offset = buffer.offset
    if offset + 16 > len(buffer.data):
        buffer.data, offset = os.urandom(_CHUNK), 0
    buffer.offset = offset + 16
    return buffer.data[offset : offset + 16]


def uuid4() -> uuid.UUID:
    """A random UUID, as `uuid.uuid4` makes it."""
    return uuid.UUID(bytes=random_bytes16(), version=4)


_RANDOM_62 = (1 << 62) - 1
_VERSION_7 = 7 << 76
_VARIANT = 2 << 62  # RFC 9562's variant bits, 10


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (version 7): Unix milliseconds, their fraction, 62 random bits."""
    buffer = _buffer
    nanoseconds = time.time_ns()
    milliseconds, rest = divmod(nanoseconds, 1_000_000)
    tick = milliseconds << 12 | rest * 4096 // 1_000_000
    if tick <= buffer.last_tick:
        tick = buffer.last_tick + 1
    buffer.last_tick = tick
    random_part = int.from_bytes(random_bytes16()[8:]) & _RANDOM_62
    return uuid.UUID(int=(tick >> 12) << 80 | _VERSION_7 | (tick & 0xFFF) << 64 | _VARIANT | random_part)
