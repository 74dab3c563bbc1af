from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Watching what is served: health thresholds per model name, drift against a reference."""

    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from core.embedded_runner import runner
        from monitoring import threshold_watch

        # Without a broker, the embedded runner's maintenance thread runs the watch (Celery
        # beat's monitoring.threshold_watch otherwise).
        runner.every(threshold_watch.threshold_watch, seconds=settings.MONITOR_THRESHOLD_INTERVAL_SECONDS)
