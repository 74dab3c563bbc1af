from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Watching what is served: health thresholds per model name, drift against a reference."""

    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from core.embedded_runner import runner
        from monitoring import services

        # Without a broker, the embedded runner's maintenance thread runs what Celery beat runs
        # otherwise (settings.CELERY_BEAT_SCHEDULE["drift"]).
        runner.every(services.drift_run, seconds=settings.DRIFT_INTERVAL_SECONDS)
