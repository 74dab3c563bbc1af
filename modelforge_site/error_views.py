"""Django-level error pages: JSON for API paths, Django's own pages elsewhere."""

from django.http import JsonResponse
from django.views import defaults

from core.exceptions import error_body

API_PREFIXES = ("/api/", "/v2")


def not_found(request, exception=None):
    if request.path.startswith(API_PREFIXES):
        return JsonResponse(
            error_body("not_found", f"No route {request.method} {request.path}. See /api/v1/docs."), status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith(API_PREFIXES):
        return JsonResponse(error_body("server_error", "An unexpected error occurred; it has been logged."), status=500)
    return defaults.server_error(request)
