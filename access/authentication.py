"""`Authorization: Bearer <key>` authentication against hashed, scoped API keys."""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication

from access.keys import authenticate_key, key_from_header
from access.models import APIKey


@dataclass(frozen=True)
class KeyPrincipal:
    """The request.user of a key-authenticated request: the key acts for itself."""

    key: APIKey
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True

    @property
    def pk(self) -> str:
        return self.key.pk

    @property
    def username(self) -> str:
        return f"key:{self.key.name}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw = key_from_header(authentication.get_authorization_header(request).decode("latin-1"))
        if raw is None:
            return None  # Not ours: session authentication may still apply.
        api_key = authenticate_key(raw)
        return KeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'
