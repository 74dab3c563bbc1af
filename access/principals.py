"""Who is calling, and whether they may: the one authorization of every door.

A door turns what its transport carries into a `Credential` (a Bearer key from the
Authorization header, a key DRF's authenticator already checked, or a signed-in user's session)
and asks `authorize(credential, scope=..., permissions=...)`, which answers with the `Principal`
the rest of the request acts as, or raises:

- 401 ``not_authenticated`` (no credential), ``invalid_api_key``, ``api_key_revoked``,
  ``api_key_expired`` (access.keys);
- 403 ``missing_scope``: a key without the route's scope;
- 403 ``permission_denied``: a session that is not staff, lacks one of the route's Django
  permissions (access.permissions.SESSION_PERMISSIONS), or calls a route closed to sessions.

The DRF views (access.permissions.HasScope), the serving exchange (inference.exchange), the /v2
views and the body gate (modelforge_site.body_gate) all call this function; none checks a key or
a scope itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions

from access.keys import authenticate_key, key_from_header
from access.models import APIKey

NOT_AUTHENTICATED = (
    "This route needs an API key: send `Authorization: Bearer <key>` (keys come from "
    "`manage.py create_api_key` or the admin)."
)


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presents: a raw Bearer key, a key already authenticated, or a session's
    user. At most one is set; none is an anonymous request."""

    raw_key: str | None = None
    api_key: APIKey | None = None
    user: Any = None

    @classmethod
    def from_header(cls, authorization: str | None) -> Credential:
        return cls(raw_key=key_from_header(authorization or ""))

    @classmethod
    def from_request(cls, request) -> Credential:
        """A DRF request's, after its authenticators ran (the key's check, the session's CSRF)."""
        if isinstance(request.auth, APIKey):
            return cls(api_key=request.auth)
        user = request.user
        return cls(user=user if getattr(user, "is_authenticated", False) else None)

    @property
    def present(self) -> bool:
        return self.raw_key is not None or self.api_key is not None or self.user is not None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: an API key, or a staff user's session (``key`` is None).

    A key's principal is also DRF's ``request.user`` for key requests: the key acts for itself,
    and is never staff.
    """

    key: APIKey | None = None
    user: Any = None

    is_authenticated = True
    is_anonymous = False
    is_superuser = False
    is_active = True

    @property
    def is_staff(self) -> bool:
        return self.key is None and bool(getattr(self.user, "is_staff", False))

    @property
    def pk(self):
        return self.key.pk if self.key is not None else self.user.pk

    @property
    def username(self) -> str:
        return f"key:{self.key.name}" if self.key is not None else self.user.get_username()

    def get_username(self) -> str:
        return self.username

    @property
    def ident(self) -> str:
        """Whose budget a request spends (access.throttling) and whose cache entries it sees:
        the key's prefix (unique, and not the stored hash), else the user's id."""
        return self.key.prefix if self.key is not None else f"user:{self.user.pk}"

    def __str__(self) -> str:
        return self.username


def authorize(credential: Credential, *, scope: str, permissions: Sequence[str] | None) -> Principal:
    """The principal of ``credential`` if it may use a route needing ``scope`` (keys) and
    ``permissions`` (sessions; None: the route is closed to sessions); raises otherwise."""
    api_key = credential.api_key
    if api_key is None and credential.raw_key is not None:
        api_key = authenticate_key(credential.raw_key)
    if api_key is not None:
        if not api_key.has_scope(scope):
            raise exceptions.PermissionDenied(
                f"This API key lacks the '{scope}' scope needed here.", code="missing_scope"
            )
        return Principal(key=api_key)
    user = credential.user
    if user is None or not user.is_authenticated:
        raise exceptions.NotAuthenticated(NOT_AUTHENTICATED, code="not_authenticated")
    if not (user.is_staff and user.is_active):
        raise exceptions.PermissionDenied(
            "Only staff users may use the API with a session; use an API key.", code="permission_denied"
        )
    if permissions is None:
        raise exceptions.PermissionDenied(
            "This route is not open to admin sessions; use an API key.", code="permission_denied"
        )
    missing = [permission for permission in permissions if not may(user, permission)]
    if missing:
        raise exceptions.PermissionDenied(
            f"Your account lacks the permission {' and '.join(map(repr, missing))} needed here "
            "(the same as in the admin); ask an administrator to grant it, or use an API key.",
            code="permission_denied",
        )
    return Principal(user=user)


def may(user, permission: str) -> bool:
    """`user.has_perm`, with `change` implying `view` as in the admin (has_view_permission)."""
    if user.has_perm(permission):
        return True
    app_label, _, codename = permission.partition(".")
    if codename.startswith("view_"):
        return user.has_perm(f"{app_label}.change_{codename.removeprefix('view_')}")
    return False
