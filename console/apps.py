from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The ops console in the Django admin: the dashboard, its charts and the shared styles."""

    name = "console"
    verbose_name = "Ops console"

    def ready(self) -> None:
        from django.contrib import admin

        # The admin index links to the dashboard (a template of this app, not an override of
        # Django's own, so the app's place in INSTALLED_APPS does not matter).
        admin.site.index_template = "admin/console/index.html"
