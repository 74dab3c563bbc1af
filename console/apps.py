from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The ops console in the Django admin: the dashboard, its charts and the shared styles."""

    name = "console"
    verbose_name = "Ops console"

    def ready(self) -> None:
        from django.contrib import admin
        from django.urls import reverse_lazy

        # The index and the sidebar list the dashboard: console.sites.OpsAdminSite.
        # ModelForge's name where Django's was, and "View site" to the API's documentation:
        # the site has no other front page.
        admin.site.site_header = admin.site.site_title = "ModelForge"
        admin.site.index_title = "Operations"
        admin.site.site_url = reverse_lazy("swagger-ui")
        _celery_results_out_of_the_index(admin.site)


def _celery_results_out_of_the_index(site) -> None:
    """django-celery-results' task and group results are Celery's own bookkeeping, which ops
    read on the job pages; they leave the index and its sidebar, and stay at their addresses for
    superusers (the admin's permissions as before). Run after the admin's autodiscovery, which
    registered them (django.contrib.admin comes before this app in INSTALLED_APPS)."""
    from django_celery_results.models import GroupResult, TaskResult

    for model in (TaskResult, GroupResult):
        registered = site._registry.get(model)
        if registered is None:
            continue
        hidden = type(type(registered).__name__, (type(registered),), {"has_module_permission": _nobody})
        site.unregister(model)
        site.register(model, hidden)


def _nobody(self, request) -> bool:
    return False
