"""Say `Connection: close` on a response given without reading the whole request body.

granian cannot reuse a connection whose request body the application left unread (a refused
key, a wrong method, a throttled or too large request: answered before the body, which is not
worth reading). It closes the connection after the response, but without telling the client,
which then sends its next request on it and gets a reset or an empty answer
(`bench/keepalive_race.py` measures it; docs/operations.md, "Connections and keep-alive").
With `Connection: close` in the response, clients open a new connection for the next request.

The body is never read here: the input is wrapped to count what the application reads, and
the header is added when the response starts if that is less than Content-Length (or, for a
chunked body, if its end was not reached).
"""

from __future__ import annotations


class _CountingInput:
    """``wsgi.input`` as the application sees it, counting the bytes read and noting the end."""

    __slots__ = ("_input", "read_bytes", "at_end")

    def __init__(self, stream):
        self._input = stream
        self.read_bytes = 0
        self.at_end = False

    def read(self, size: int | None = -1) -> bytes:
        whole = size is None or size < 0
        data = self._input.read() if whole else self._input.read(size)
        self.read_bytes += len(data)
        if whole or not data:
            self.at_end = True
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._input.readline() if size is None or size < 0 else self._input.readline(size)
        self.read_bytes += len(data)
        if not data:
            self.at_end = True
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = self._input.readlines() if hint is None or hint < 0 else self._input.readlines(hint)
        self.read_bytes += sum(map(len, lines))
        if hint is None or hint < 0:
            self.at_end = True
        return lines

    def __iter__(self):
        while line := self.readline():
            yield line


class CloseUnreadBodies:
    """WSGI middleware: see the module's docstring."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and (not length.isdigit() or int(length) == 0):
            return self.app(environ, start_response)  # no body: nothing can be left unread
        expected = None if chunked else int(length)
        counted = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counted

        def start(status, headers, exc_info=None):
            unread = not counted.at_end if expected is None else counted.read_bytes < expected
            if unread and not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
