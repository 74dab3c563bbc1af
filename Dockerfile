# ModelForge production image: slim, non-root, gunicorn serving the WSGI app.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MODEL_STORAGE_PATH=/data/models \
    JOB_STORAGE_PATH=/data/jobs \
    STATIC_ROOT=/app/static

WORKDIR /app
COPY requirements/ requirements/
RUN pip install -r requirements/base.txt

COPY . .
RUN useradd --system --uid 10001 --home /app modelforge \
    && mkdir -p /data/models /data/jobs /app/var \
    && DEBUG=true python manage.py collectstatic --noinput \
    && rm -f /app/var/dev-secret-key \
    && chown -R modelforge /data /app/var

USER modelforge
EXPOSE 8000
CMD ["granian", "--interface", "wsgi", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--blocking-threads", "4", "--no-access-log", "modelforge_site.wsgi:application"]
