"""One POST to a receiver, to the address url_safety checked: no redirects, short timeouts,
at most a short prefix of the answer read.

The connection goes to a checked IP address (`Target.addresses`), with the URL's host in the
Host header and, for https, as the TLS server name and the name the certificate must carry;
the name is never resolved again here, so DNS cannot swap in a refused address after the check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import urllib3
from django.conf import settings

from webhooks.models import RESPONSE_PREFIX_CHARS
from webhooks.url_safety import Target


@dataclass(frozen=True)
class Response:
    status_code: int | None  # None: no answer (the error says why)
    error: str
    duration_ms: float
    prefix: str  # the start of the answer's body

    @property
    def retryable(self) -> bool:
        """Timeouts, connection errors and 5xx are tried again; any other answer is final."""
        return self.status_code is None or self.status_code >= 500

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _pool(target: Target, address: str) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=settings.WEBHOOK_TIMEOUT_SECONDS, read=settings.WEBHOOK_TIMEOUT_SECONDS)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False, maxsize=1)


def post(target: Target, *, body: bytes, headers: dict[str, str]) -> Response:
    """POST ``body`` to ``target`` (its first checked address) and say what came back."""
    pool = _pool(target, target.addresses[0])
    started = time.monotonic()
    try:
        answer = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            # Only the start of the answer is read (and kept): a receiver cannot make us read more.
            prefix = answer.read(RESPONSE_PREFIX_CHARS * 4, decode_content=False)
        finally:
            answer.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        # NewConnectionError is a TimeoutError subclass in urllib3, but a refusal is not a timeout.
        timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
            exc, urllib3.exceptions.NewConnectionError
        )
        kind = "timed out" if timed_out else "connection failed"
        return Response(None, f"{kind}: {reason}"[:500], _ms(started), "")
    finally:
        pool.close()
    text = prefix.decode("utf-8", errors="replace")[:RESPONSE_PREFIX_CHARS]
    return Response(answer.status, "", _ms(started), text)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
