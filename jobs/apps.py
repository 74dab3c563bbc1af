from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from core.embedded_runner import runner
        from jobs import services

        # Without a broker, the embedded runner's maintenance thread does what Celery beat and
        # a lost worker's redelivery do otherwise (the schedule in settings.CELERY_BEAT_SCHEDULE).
        runner.every(services.jobs_recover)
        runner.every(services.jobs_sweep)
        runner.every(services.jobs_cleanup, seconds=3600)
