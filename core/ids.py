"""Random ids (UUID version 4) for requests and predictions, without a system call per id.

`uuid.uuid4` asks the kernel for 16 bytes (getrandom) on every call; the predict path makes two
ids per request, and under load those system calls cost more than the rest of the id work. Here
each thread reads 4 KiB from the same source (`os.urandom`) at a time and cuts 256 ids from it:
the ids are exactly as random as uuid4's. The buffers are dropped in a forked child (granian and
Celery fork their workers), so two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

_CHUNK = 4096  # bytes read from the kernel at a time: 256 ids


class _Buffer(threading.local):
    def __init__(self) -> None:
        self.data = b""
        self.offset = 0


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
