"""manage.py cleanup_history: remove prediction history older than HISTORY_RETENTION_DAYS (on
PostgreSQL by dropping its day partitions, and making those of the week ahead) and per-minute
serving statistics older than SERVING_STATS_RETENTION_DAYS.

Celery beat runs this hourly in production; without a broker, run it from cron.
"""

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.history import history_cleanup
from inference.serving_stats import serving_stats_cleanup


class Command(BaseCommand):
    help = "Delete prediction history and serving statistics past their retention."

    def handle(self, *args, **options):
        deleted = history_cleanup()
        self.stdout.write(f"deleted {deleted} predictions older than {settings.HISTORY_RETENTION_DAYS} days")
        minutes = serving_stats_cleanup()
        self.stdout.write(f"deleted {minutes} serving minutes older than {settings.SERVING_STATS_RETENTION_DAYS} days")
