"""API key writes."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from access.models import ALL_SCOPES, APIKey
from core.exceptions import Conflict


class KeyNameTaken(Conflict):
    code = "api_key_name_taken"


def name_taken_error(name: str) -> KeyNameTaken:
    """The refusal of a name another key has (letter case aside), naming that key."""
    other = APIKey.objects.filter(name__iexact=name).first()
    holder = f" ({other.name}, prefix {other.prefix}{', revoked' if other.revoked else ''})" if other else ""
    return KeyNameTaken(
        f"An API key named “{name}” already exists{holder}. Key names are unique, letter case aside: "
        "choose another name, e.g. with the date or the environment in it."
    )


def api_key_create(*, name: str, scopes: list[str], expiry_date: datetime | None = None) -> tuple[APIKey, str]:
    """Create a key; returns the row and the raw key, which is never stored and never shown again.

    Raises ValueError for a bad name or scopes, and KeyNameTaken (409) when another key has the
    name: the unique constraint decides a race between two creations."""
    if not name or len(name) > 50:
        raise ValueError("A key name is 1-50 characters.")
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"Scopes must be a non-empty subset of {', '.join(ALL_SCOPES)}; got {', '.join(unknown) or 'none'}."
        )
    ordered = [scope for scope in ALL_SCOPES if scope in scopes]
    if APIKey.objects.filter(name__iexact=name).exists():
        raise name_taken_error(name)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives a lost race
            return APIKey.objects.create_key(name=name, scopes=ordered, expiry_date=expiry_date)
    except IntegrityError as exc:
        if APIKey.objects.filter(name__iexact=name).exists():
            raise name_taken_error(name) from exc
        raise


def api_key_revoke(*, api_key: APIKey) -> APIKey:
    """Revoke for good; the library refuses to un-revoke."""
    if not api_key.revoked:
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    return api_key


def api_key_expire(*, api_key: APIKey) -> APIKey:
    """End a key now by setting its expiry to the present; every process drops its cached copy
    (APIKey.save), so the next request with it is 401 api_key_expired. Unlike revoking, this can
    be undone by giving the key a later expiry. A key already expired or revoked is left alone."""
    now = timezone.now()
    if not api_key.revoked and (api_key.expiry_date is None or api_key.expiry_date > now):
        api_key.expiry_date = now
        api_key.save(update_fields=["expiry_date"])
    return api_key
