"""gunicorn settings for production (`make serve`, docker-compose). Override with environment
variables: BIND, WEB_WORKERS (default: one per core), WEB_THREADS, WEB_TIMEOUT."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_WORKERS", multiprocessing.cpu_count()))
worker_class = os.environ.get("WEB_WORKER_CLASS", "gthread")
threads = int(os.environ.get("WEB_THREADS", "4"))
keepalive = 5
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
# SIGTERM: stop accepting, let in-flight requests finish for up to this long.
graceful_timeout = 30
accesslog = None
errorlog = "-"


def post_worker_init(worker):
    """Load sessions for models flagged `preload` before the worker takes traffic."""
    from inference.sessions import preload_flagged

    preload_flagged()


def worker_exit(server, worker):
    """Write buffered prediction history and serving statistics before the worker goes."""
    from inference.history import history
    from inference.serving_stats import serving_stats

    history.flush()
    serving_stats.flush()
