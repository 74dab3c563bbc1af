from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Watching what is served: health thresholds per model name, drift against a reference."""

    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"
