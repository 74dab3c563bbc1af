"""Reading a request body under a deadline, without tying up serving threads.

An admitted body (modelforge_site.body_gate; the fast path's bodies once the exchange admitted
the caller) is read through `BodyInput`: at most BODY_READ_SLOTS threads per process wait on
bodies at once (the others are answered 503 ``server_busy`` with Retry-After, so threads stay
free for the probes and bodiless requests), and a body must arrive within
BODY_READ_TIMEOUT_SECONDS plus one second per BODY_MIN_RATE_BYTES_PER_SECOND bytes of its
Content-Length, else 408 ``request_timeout``. granian's ``wsgi.input.read(n)`` blocks until n
bytes have come and nothing can interrupt it, so the blocking read runs on one of a few reader
threads (at most BODY_READERS_MAX per process) while the serving thread waits with the
deadline: a stalled client costs a reader thread until it sends or hangs up, never a serving
thread past its deadline.

A request whose body is left unread (refused first, cut off) is marked `UNREAD` in its environ:
its answer then carries `Connection: close`, so the rest is dropped with the connection.
"""

from __future__ import annotations

import threading
import time
from http import HTTPStatus

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.exceptions import DomainError, ServiceUnavailable

# The environ key set when the body is left unread: responses then carry `Connection: close`.
UNREAD = "modelforge.body_unread"
# How long a read waits for a free slot before 503: slots held by bodies that do arrive are
# free again within microseconds; slots held by slow ones are not worth waiting for.
SLOT_WAIT_SECONDS = 0.1


def closes_itself(environ) -> bool:
    """Whether the WSGI server takes care of a body left unread on its own, so that the answer
    must not say `Connection: close`: wsgiref's servers (`manage.py runserver`, Django's live
    test servers) refuse hop-by-hop headers from an application, as PEP 3333 says they may,
    and read what is left of the body before the next request. granian needs the header."""
    return str(environ.get("SERVER_SOFTWARE", "")).startswith("WSGIServer/")


def content_length(value: str | None) -> int:
    """A CONTENT_LENGTH header as a byte count: 0 when absent or not a number."""
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


class RequestTimeout(DomainError):
    status_code = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"


class BodyReadersBusy(ServiceUnavailable):
    code = "server_busy"
    retry_after = 1


class BodyInput:
    """wsgi.input for an admitted body: reads under the body's deadline, through a reader thread,
    holding one of the process's read slots while it waits."""

    __slots__ = ("_stream", "_left", "_deadline", "_environ")

    def __init__(self, stream, length: int, environ):
        self._stream = stream
        self._left = length
        self._deadline = (
            time.monotonic() + settings.BODY_READ_TIMEOUT_SECONDS + length / settings.BODY_MIN_RATE_BYTES_PER_SECOND
        )
        self._environ = environ

    @property
    def unread(self) -> bool:
        """Whether some of the body was never read."""
        return self._left > 0

    def read(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        if size == 0:
            return b""
        data = self._read(self._stream.read, size)
        self._left -= len(data)
        if not data:
            self._left = 0  # the client closed: nothing more will come
        return data

    def _read(self, read, size: int) -> bytes:
        try:
            return _read(read, size, self._deadline)
        except DomainError:
            self._environ[UNREAD] = True  # the rest of the body is never read: close after answering
            raise

    def readline(self, size=-1):
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        line = self._read(self._stream.readline, size)
        self._left -= len(line)
        return line


def read_body(environ, length: int) -> bytes:
    """The whole body of a request already admitted (the fast path's own key check passed).
    Until it is read, the request counts as unread (`Connection: close` on the answer)."""
    if length <= 0:
        return b""
    body = BodyInput(environ["wsgi.input"], length, environ).read(length)
    environ[UNREAD] = len(body) < length
    return body


_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


@receiver(setting_changed)
def _resize_slots(*, setting, **kwargs) -> None:
    global _slots
    if setting == "BODY_READ_SLOTS":
        _slots = None


def _read_slots() -> threading.BoundedSemaphore:
    global _slots
    if _slots is None:
        with _slots_lock:
            if _slots is None:
                _slots = threading.BoundedSemaphore(settings.BODY_READ_SLOTS)
    return _slots


def _read(read, size: int, deadline: float) -> bytes:
    slots = _read_slots()
    if not slots.acquire(timeout=SLOT_WAIT_SECONDS):
        raise BodyReadersBusy(
            f"Too many request bodies are arriving at once (BODY_READ_SLOTS={settings.BODY_READ_SLOTS} per "
            "process); retry after Retry-After seconds."
        )
    try:
        job = _pool.submit(read, size)
        if job is None:
            raise BodyReadersBusy(
                f"Every body reader of this process waits on a client (BODY_READERS_MAX={settings.BODY_READERS_MAX}); "
                "retry after Retry-After seconds."
            )
        if not job.done.acquire(timeout=max(deadline - time.monotonic(), 0)):
            job.abandoned = True
            raise RequestTimeout(
                "The request body arrived too slowly: it must come within "
                f"{settings.BODY_READ_TIMEOUT_SECONDS:g}s plus one second per "
                f"{settings.BODY_MIN_RATE_BYTES_PER_SECOND} bytes (BODY_READ_TIMEOUT_SECONDS, "
                "BODY_MIN_RATE_BYTES_PER_SECOND). Send it again, faster."
            )
        if job.error is not None:
            raise job.error
        return job.data
    finally:
        slots.release()


class _Job:
    __slots__ = ("read", "size", "done", "data", "error", "abandoned")

    def __init__(self, read, size: int):
        self.read, self.size = read, size
        self.done = threading.Lock()
        self.done.acquire()
        self.data, self.error, self.abandoned = b"", None, False


class _Reader(threading.Thread):
    """Runs one blocking read at a time; back in the pool's idle list when it returns."""

    def __init__(self, pool: _ReaderPool):
        super().__init__(name="body-reader", daemon=True)
        self.pool = pool
        self.go = threading.Lock()
        self.go.acquire()
        self.job: _Job | None = None

    def run(self) -> None:
        while True:
            self.go.acquire()
            job, self.job = self.job, None
            try:
                job.data = job.read(job.size)
            except BaseException as exc:  # handed to the waiting thread, which raises it
                job.error = exc
            job.done.release()
            job = None  # an abandoned job's stream goes now: the server can drop the connection
            self.pool.idle(self)


class _ReaderPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Reader] = []
        self._count = 0

    def submit(self, read, size: int) -> _Job | None:
        with self._lock:
            if self._idle:
                reader = self._idle.pop()
            elif self._count < settings.BODY_READERS_MAX:
                self._count += 1
                reader = _Reader(self)
                reader.start()
            else:
                return None
        job = reader.job = _Job(read, size)
        reader.go.release()
        return job

    def idle(self, reader: _Reader) -> None:
        with self._lock:
            self._idle.append(reader)


_pool = _ReaderPool()
