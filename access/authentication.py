"""`Authorization: Bearer <key>` authentication against hashed, scoped API keys, for DRF."""

from __future__ import annotations

from rest_framework import authentication

from access.keys import authenticate_key, key_from_header
from access.principals import Principal


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        raw = key_from_header(authentication.get_authorization_header(request).decode("latin-1"))
        if raw is None:
            return None  # Not ours: session authentication may still apply.
        api_key = authenticate_key(raw)
        return Principal(key=api_key), api_key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'
