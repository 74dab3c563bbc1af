"""API key writes."""

from __future__ import annotations

from datetime import datetime

from access.models import ALL_SCOPES, APIKey


def api_key_create(*, name: str, scopes: list[str], expiry_date: datetime | None = None) -> tuple[APIKey, str]:
    """Create a key; returns the row and the raw key, which is never stored and never shown again."""
    if not name or len(name) > 50:
        raise ValueError("A key name is 1-50 characters.")
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"Scopes must be a non-empty subset of {', '.join(ALL_SCOPES)}; got {', '.join(unknown) or 'none'}."
        )
    ordered = [scope for scope in ALL_SCOPES if scope in scopes]
    return APIKey.objects.create_key(name=name, scopes=ordered, expiry_date=expiry_date)


def api_key_revoke(*, api_key: APIKey) -> APIKey:
    """Revoke for good; the library refuses to un-revoke."""
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    return api_key
