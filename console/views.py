"""The dashboard page of the admin: staff only (wrapped by admin.site.admin_view in urls.py), and
only those who may read /metrics, whose figures it shows (access.permissions.METRICS_VIEW)."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from access.permissions import METRICS_VIEW
from access.principals import may
from console.dashboard import dashboard


def dashboard_view(request):
    if not may(request.user, METRICS_VIEW):
        raise PermissionDenied
    try:
        model_id = uuid.UUID(request.GET["model"]) if request.GET.get("model") else None
    except ValueError:
        model_id = None
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": "the last 24 hours",
        **dashboard(model_id=model_id),
    }
    return TemplateResponse(request, "admin/console/dashboard.html", context)
