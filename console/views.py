"""The dashboard page of the admin: staff only (wrapped by admin.site.admin_view in urls.py), and
only those who may read /metrics, whose figures it shows (access.permissions.METRICS_VIEW).

The page's state is its query string: ``range`` (1h, 6h, 24h, 7d), ``refresh`` (off, 10, 60
seconds) and ``model`` (one version's charts). Every link of the page keeps the others, and the
auto-refresh reloads the same address (a <meta http-equiv="refresh">: no script), so a refresh
never loses the chosen range. An unknown value is the default, as a mistyped address should
still open the page.
"""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import QueryDict
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from access.permissions import METRICS_VIEW
from access.principals import may
from console.dashboard import DEFAULT_RANGE, DEFAULT_REFRESH, RANGES, REFRESH, dashboard
from monitoring.models import Thresholds


def _choice(request, name: str, choices, default: str) -> str:
    value = request.GET.get(name, default)
    return value if value in choices else default


def _query(**state: str) -> str:
    """The query string of a state, defaults left out: ?range=6h&refresh=10."""
    query = QueryDict(mutable=True)
    defaults = {"range": DEFAULT_RANGE, "refresh": DEFAULT_REFRESH, "model": ""}
    for name, value in state.items():
        if value and value != defaults[name]:
            query[name] = value
    return f"?{query.urlencode()}" if query else "?"


def dashboard_view(request):
    if not may(request.user, METRICS_VIEW):
        raise PermissionDenied
    try:
        model_id = uuid.UUID(request.GET["model"]) if request.GET.get("model") else None
    except ValueError:
        model_id = None
    state = {
        "range": _choice(request, "range", RANGES, DEFAULT_RANGE),
        "refresh": _choice(request, "refresh", REFRESH, DEFAULT_REFRESH),
        "model": str(model_id) if model_id else "",
    }
    data = dashboard(range_key=state["range"], model_id=model_id)
    own = dict(
        Thresholds.objects.filter(name__in={row["model_name"] for row in data["serving"]["summary"]}).values_list(
            "name", "pk"
        )
    )
    for row in data["serving"]["summary"]:
        row["charts_query"] = _query(**{**state, "model": str(row["model_id"])})
        row["thresholds_url"] = (
            reverse("admin:monitoring_thresholds_change", args=[own[row["model_name"]]])
            if row["model_name"] in own
            else reverse("admin:monitoring_thresholds_add") + "?" + urlencode({"name": row["model_name"]})
        )
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "subtitle": f"the last {data['range'].label}",
        **data,
        "refresh_seconds": REFRESH[state["refresh"]],
        "all_models_query": _query(**{**state, "model": ""}),
        "range_links": [
            {
                "key": key,
                "label": key.replace("h", " h").replace("d", " d"),
                "query": _query(**{**state, "range": key}),
                "current": key == state["range"],
            }
            for key in RANGES
        ],  # fmt: skip
        "refresh_links": [
            {
                "label": "off" if seconds is None else f"{seconds} s",
                "query": _query(**{**state, "refresh": key}),
                "current": key == state["refresh"],
            }
            for key, seconds in REFRESH.items()
        ],  # fmt: skip
        "thresholds_url": reverse("admin:monitoring_thresholds_changelist"),
    }
    return TemplateResponse(request, "admin/console/dashboard.html", context)
