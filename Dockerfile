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
# 8000: HTTP (granian), 8001: gRPC (manage.py serve_grpc).
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/v1/live', timeout=4)"]
# deploy/serve.sh starts the HTTP server (granian, --respawn-failed-workers: a worker that dies is
# replaced while the others serve on) and the gRPC server side by side, hands SIGTERM to both (in-
# flight requests and calls finish, the history buffer is written) and exits when either does.
# SERVE=http or SERVE=grpc runs one of them (the two containers of deploy/k8s/api.yaml).
CMD ["deploy/serve.sh"]
