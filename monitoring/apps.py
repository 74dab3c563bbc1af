from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Watching what is served: health thresholds per model name, drift against a reference."""

    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from core import events
        from core.embedded_runner import runner
        from monitoring import services, threshold_watch

        # Without a broker, the embedded runner's maintenance thread runs what Celery beat runs
        # otherwise (settings.CELERY_BEAT_SCHEDULE["threshold-watch"] and ["drift"]).
        runner.every(threshold_watch.threshold_watch, seconds=settings.MONITOR_THRESHOLD_INTERVAL_SECONDS)
        runner.every(services.drift_run, seconds=settings.DRIFT_INTERVAL_SECONDS)
        # A version validated: summarise the reference file given with its upload, if any.
        events.raised.connect(services.on_event, dispatch_uid="monitoring.on_event")
