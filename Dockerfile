# ModelForge production image: slim, non-root, granian serving the WSGI app (the server chosen by
# measurement, docs/performance.md). The same image runs the Celery worker and beat
# (docker-compose.yml, deploy/k8s/): only the command differs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODEL_STORAGE_PATH=/data/models \
    MODEL_CACHE_PATH=/data/model-cache \
    JOB_STORAGE_PATH=/data/jobs \
    STATIC_ROOT=/app/static \
    WEB_WORKERS=2 \
    WEB_THREADS=4

WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

COPY . .
RUN useradd --system --uid 10001 --home /app modelforge \
    && mkdir -p /data/models /data/model-cache /data/jobs /app/var \
    && DEBUG=true python manage.py collectstatic --noinput \
    && rm -f /app/var/dev-secret-key \
    && chown -R modelforge /data /app/var

USER 10001
# 8000: HTTP (granian). 8001: gRPC, when the command is `python manage.py serve_grpc --host 0.0.0.0`
# (docker-compose.yml's grpc service, the second container of deploy/k8s/api.yaml).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/live', timeout=4)"]
# sh -c to expand WEB_WORKERS / WEB_THREADS and to empty the Prometheus multiprocess folder (so
# /metrics sums the workers of this start only); exec hands PID 1 to granian, so SIGTERM
# reaches it and in-flight requests finish. --respawn-failed-workers: a worker that dies is
# replaced while the others serve on (docs/operations.md, "A process dies"); the Kubernetes
# Deployment (deploy/k8s/api.yaml) runs this command as it is.
CMD ["sh", "-c", "export PROMETHEUS_MULTIPROC_DIR=\"${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && rm -f \"$PROMETHEUS_MULTIPROC_DIR\"/*.db && exec granian --interface wsgi --host 0.0.0.0 --port 8000 --workers \"$WEB_WORKERS\" --blocking-threads \"$WEB_THREADS\" --respawn-failed-workers --no-access-log modelforge_site.wsgi:application"]
