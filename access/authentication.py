"""`Authorization: Bearer <key>` authentication against hashed, scoped API keys."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions

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


class InvalidKey(exceptions.AuthenticationFailed):
    default_code = "invalid_api_key"
    default_detail = (
        "The API key is not valid. Send a key from `manage.py create_api_key` as `Authorization: Bearer <key>`."
    )


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, key = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None  # Not ours: session authentication may still apply.
        key = key.strip()
        if not key or "." not in key or len(key) > 200:
            raise InvalidKey()

        prefix = key.partition(".")[0]
        api_key = APIKey.objects.filter(prefix=prefix).first()
        # The hash is checked before telling revoked or expired apart, so that only the
        # holder of a real key learns its state.
        if api_key is None or not api_key.is_valid(key):
            raise InvalidKey()
        if api_key.revoked:
            raise exceptions.AuthenticationFailed(
                "This API key has been revoked. Ask an operator for a new key.", code="api_key_revoked"
            )
        if api_key.expiry_date is not None and api_key.expiry_date <= timezone.now():
            raise exceptions.AuthenticationFailed(
                f"This API key expired at {api_key.expiry_date.isoformat()}. Ask an operator for a new key.",
                code="api_key_expired",
            )
        return KeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'
