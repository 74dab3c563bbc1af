"""Serve the Open Inference Protocol over gRPC (inference/grpc/server.py)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.grpc import server


class Command(BaseCommand):
    help = (
        "Serve inference.GRPCInferenceService (Triton's and KServe's gRPC protocol) and grpc.health.v1 "
        "until SIGTERM, which drains the calls in flight."
    )
    requires_system_checks = []  # as a server start: `check` is its own command

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.GRPC_HOST, help="Address to bind (GRPC_HOST).")
        parser.add_argument("--port", type=int, default=settings.GRPC_PORT, help="Port (GRPC_PORT, 8001).")
        parser.add_argument(
            "--workers", type=int, default=settings.GRPC_WORKERS, help="Processes (GRPC_WORKERS, one per core)."
        )
        parser.add_argument(
            "--threads", type=int, default=settings.GRPC_THREADS, help="Threads per process (GRPC_THREADS)."
        )

    def handle(self, *args, host, port, workers, threads, **options):
        if workers < 1 or threads < 1:
            raise CommandError("--workers and --threads must be at least 1.")
        self.stdout.write(f"Serving gRPC on {host}:{port} with {workers} process(es) of {threads} threads.")
        self.stdout.flush()
        try:
            server.serve(host, port, workers=workers, threads=threads, grace=settings.GRPC_SHUTDOWN_GRACE_SECONDS)
        except (OSError, RuntimeError) as exc:
            raise CommandError(f"Cannot serve on {host}:{port}: {exc}") from None
