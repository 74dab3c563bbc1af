"""The signature of a delivery, as receivers check it (docs/webhooks.md has their snippet).

    ModelForge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + body)>

The timestamp is signed with the body, so a receiver can refuse old deliveries (a replay) by
comparing ``t`` with its clock; the event id (ModelForge-Event-Id, also in the body) lets it
ignore one it has already handled, since delivery is at least once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "ModelForge-Signature"
TIMESTAMP_HEADER = "ModelForge-Timestamp"
EVENT_ID_HEADER = "ModelForge-Event-Id"
EVENT_TYPE_HEADER = "ModelForge-Event-Type"
DELIVERY_ID_HEADER = "ModelForge-Delivery-Id"

SECRET_PREFIX = "whsec_"  # noqa: S105 (a label, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of now."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
