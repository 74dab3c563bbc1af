"""The admin site with the ops console in its app list: the index and the navigation sidebar of
every admin page list "Ops console › Dashboard" first, for those who may read the dashboard
(access.permissions.METRICS_VIEW, as console.views checks).

Installed in place of Django's admin app (settings.INSTALLED_APPS: ``console.sites.OpsAdminConfig``),
Django's documented way to replace the default site: ``admin.site`` and every
``@admin.register`` stay as they are.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import reverse


class OpsAdminSite(admin.AdminSite):
    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is None and _may_read_dashboard(request.user):
            url = reverse("console-dashboard")
            apps.insert(
                0,
                {
                    "name": "Ops console",
                    "app_label": "console",
                    "app_url": url,
                    "has_module_perms": True,
                    "models": [
                        {
                            "name": "Dashboard",
                            "object_name": "Dashboard",
                            "perms": {"add": False, "change": False, "delete": False, "view": True},
                            "admin_url": url,
                            "add_url": None,
                            "view_only": True,
                        }
                    ],
                },
            )
        return apps


def _may_read_dashboard(user) -> bool:
    # Imported here: this module is imported while the apps load (INSTALLED_APPS names its
    # config), before access's models may be.
    from access.permissions import METRICS_VIEW
    from access.principals import may

    return may(user, METRICS_VIEW)


class OpsAdminConfig(AdminConfig):
    default_site = "console.sites.OpsAdminSite"
