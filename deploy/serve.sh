#!/bin/bash
# The image's command: ModelForge's doors, as SERVE says.
#   SERVE=both (default)  granian (HTTP, port 8000) and the gRPC server (port 8001) side by side:
#                         `docker run -p 8000:8000 -p 8001:8001 modelforge` serves both protocols.
#   SERVE=http            granian only.
#   SERVE=grpc            `manage.py serve_grpc` only.
# SIGTERM reaches every server: granian finishes in-flight requests and writes the history
# buffer, the gRPC server drains in-flight calls. If one server exits, the other is stopped and
# the container exits with its status, so the orchestrator restarts the whole (a container
# serving half of its doors would look healthy on the other's probe).
set -u

# Prometheus multiprocess mode: every process of both servers writes its metrics here and the
# HTTP server's /metrics adds them up (gRPC calls included). Emptied before either starts, so the
# sums are this start's (prometheus_client's rule).
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
WEB_WORKERS="${WEB_WORKERS:-2}"
WEB_THREADS="${WEB_THREADS:-4}"
GRPC_WORKERS="${GRPC_WORKERS:-$WEB_WORKERS}"

http() {
    # --respawn-failed-workers: a worker that dies is replaced while the others serve on
    # (docs/operations.md, "A process dies").
    exec granian --interface wsgi --host 0.0.0.0 --port "${PORT:-8000}" --workers "$WEB_WORKERS" \
        --blocking-threads "$WEB_THREADS" --respawn-failed-workers --no-access-log modelforge_site.wsgi:application
}

grpc() {
    exec python manage.py serve_grpc --host 0.0.0.0 --port "${GRPC_PORT:-8001}" --workers "$GRPC_WORKERS"
}

case "${SERVE:-both}" in
    http) http ;;
    grpc) grpc ;;
    both) ;;
    *) echo "SERVE must be both, http or grpc; it is '${SERVE}'" >&2; exit 2 ;;
esac

http &
http_pid=$!
grpc &
grpc_pid=$!
trap 'kill -TERM "$http_pid" "$grpc_pid" 2>/dev/null' TERM INT
# Whichever ends first (a signal interrupts the wait too), stop the other and wait for both.
wait -n
status=$?
kill -TERM "$http_pid" "$grpc_pid" 2>/dev/null
wait
exit "$status"
