"""`GET /metrics`: the Prometheus exposition, for a key with the `read` scope.

It holds the inference instruments (inference.metrics) of this process, or with
PROMETHEUS_MULTIPROC_DIR set the sum over every process writing to that directory (the
workers of `make serve`), and what is read at scrape time: jobs by status and the age of the
oldest queued job per queue (the database), the Celery queue lengths and the workers alive (the
broker), this process's session pool, and each version's drift (monitoring.metrics). The text format, or
OpenMetrics when the scraper asks for it (prometheus_client chooses, from Accept).
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.views import APIView

from access.models import Scope
from inference import metrics, rollout_guard
from monitoring.metrics import DriftCollector


class _ScrapeTimeCollector:
    """Values read when scraped, not counted: they are the same whichever process answers."""

    def collect(self):
        from jobs.models import Job
        from jobs.monitoring import HEARTBEAT_ALIVE_SECONDS, QUEUES, live_workers, oldest_queued_seconds, queue_lengths

        counts = dict(Job.objects.order_by().values("status").annotate(n=Count("pk")).values_list("status", "n"))
        jobs = GaugeMetricFamily("modelforge_jobs", "Jobs by status (the database, at scrape time).", labels=["status"])
        for status in Job.Status.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        oldest = GaugeMetricFamily(
            "modelforge_job_queue_oldest_seconds",
            "How long the oldest queued job of each queue (its priority) has waited; 0 when none waits.",
            labels=["queue"],
        )
        for name, seconds in oldest_queued_seconds().items():
            oldest.add_metric([name], seconds)
        yield oldest
        try:
            lengths, up = queue_lengths(), 1
            # Without a broker the server's own threads run the jobs: there are no workers to count.
            workers = live_workers() if settings.CELERY_BROKER_URL else None
        except Exception:  # a broker that does not answer is reported, not an error of the scrape
            lengths, up, workers = {}, 0, None
        yield GaugeMetricFamily("modelforge_broker_up", "1 when the job broker answered this scrape.", value=up)
        queues = GaugeMetricFamily(
            "modelforge_queue_length", "Job messages waiting per Celery queue.", labels=["queue"]
        )
        for name in QUEUES:
            if name in lengths:
                queues.add_metric([name], lengths[name])
        yield queues
        if workers is not None:
            yield GaugeMetricFamily(
                "modelforge_workers",
                f"Celery workers whose heartbeat reached the broker in the last {HEARTBEAT_ALIVE_SECONDS} s.",
                value=workers,
            )
        yield from rollout_guard.collect()


class _Registry:
    """The default registry's collectors, as one collector of a per-scrape registry."""

    def collect(self):
        return REGISTRY.collect()


def exposition(accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of one scrape."""
    metrics.refresh_pool()
    metrics.pending.flush()  # this process's latest counts (the others' within metrics.FLUSH_SECONDS)
    registry = CollectorRegistry(auto_describe=False)
    if metrics.MULTIPROCESS:
        MultiProcessCollector(registry)  # every process's files, this one's included
    else:
        registry.register(_Registry())
    registry.register(_ScrapeTimeCollector())
    registry.register(DriftCollector())
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _TextRenderer(BaseRenderer):
    """Lets `Accept: text/plain` (and OpenMetrics) scrapers through content negotiation;
    errors are still JSON bodies."""

    media_type = "text/plain"
    format = "txt"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data)


class _OpenMetricsRenderer(_TextRenderer):
    media_type = "application/openmetrics-text"


class MetricsView(APIView):
    required_scopes = {"GET": Scope.READ}
    renderer_classes = (JSONRenderer, _TextRenderer, _OpenMetricsRenderer)

    @extend_schema(exclude=True)  # Prometheus' format, not a JSON API: documented in README
    def get(self, request):
        content, content_type = exposition(request.headers.get("Accept"))
        return HttpResponse(content, content_type=content_type)
