"""Scope checks: reads need `read`, registry writes `manage`, inference `predict`."""

from __future__ import annotations

from rest_framework import permissions

from access.models import APIKey, Scope


def required_scope(request, view) -> str:
    """The scope a view asks for: `required_scopes[action]`, else read for safe methods."""
    scopes = getattr(view, "required_scopes", {}) or {}
    action = getattr(view, "action", None)
    if action in scopes:
        return scopes[action]
    if request.method in scopes:
        return scopes[request.method]
    return Scope.READ if request.method in permissions.SAFE_METHODS else Scope.MANAGE


class HasScope(permissions.BasePermission):
    """API keys need the scope; staff signed in to the admin may do everything."""

    def has_permission(self, request, view) -> bool:
        scope = required_scope(request, view)
        if isinstance(request.auth, APIKey):
            if request.auth.has_scope(scope):
                return True
            self.message = f"This API key lacks the '{scope}' scope needed here."
            self.code = "missing_scope"
            return False
        user = request.user
        if user and user.is_authenticated and user.is_staff and user.is_active:
            return True
        if user and user.is_authenticated:
            self.message = "Only staff users may use the API with a session; use an API key."
            self.code = "permission_denied"
        return False


def is_staff_request(request) -> bool:
    return bool(getattr(request.user, "is_staff", False)) and not isinstance(request.auth, APIKey)
